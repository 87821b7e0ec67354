//! Request translation between every pair of formats, on any body: an answer or an error,
//! never a panic; what it writes is JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sira::translate::{translate_request, RequestOptions, Seal};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((from, rest)) = common::format(data) else {
        return;
    };
    let Some((to, body)) = common::format(rest) else {
        return;
    };
    let opts = RequestOptions {
        model: "m",
        stream: body.len() % 2 == 0,
        default_max_tokens: 64,
        legacy_max_tokens: false,
        prompt_cache: true,
        web_search: body.len() % 3 == 0,
        seal: Seal::fixed(),
    };
    if let Ok(out) = translate_request(from, to, body, &opts) {
        assert!(serde_json::from_slice::<serde_json::Value>(&out.body).is_ok());
    }
    let _ = sira::translate::estimate_input_tokens(from, body);
    let _ = sira::translate::strip_foreign_reasoning(from, body);
});
