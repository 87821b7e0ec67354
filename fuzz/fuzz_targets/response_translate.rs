//! Response translation and usage extraction on any body, between every pair of formats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sira::translate::{translate_response, ResponseOptions};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((from, rest)) = common::format(data) else {
        return;
    };
    let Some((to, body)) = common::format(rest) else {
        return;
    };
    let opts = ResponseOptions {
        model: "m".into(),
        request_id: "req_fuzz".into(),
        created: 1,
    };
    let _ = translate_response(from, to, body, &opts);
    let _ = sira::accounting::usage_from_json(from, body);
});
