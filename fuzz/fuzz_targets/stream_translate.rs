//! Every stream translator and the usage tap, fed arbitrary bytes in arbitrary pieces:
//! no panic, bounded output, and `finish` always works.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sira::accounting::StreamUsage;
use sira::translate::{ResponseOptions, StreamTranslator};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((from, rest)) = common::format(data) else {
        return;
    };
    let Some((to, rest)) = common::format(rest) else {
        return;
    };
    let opts = ResponseOptions {
        model: "m".into(),
        request_id: "req_fuzz".into(),
        created: 1,
    };
    let mut translator = StreamTranslator::new(from, to, opts);
    let mut usage = StreamUsage::new(from);
    let mut out = BytesMut::new();
    for piece in common::pieces(rest) {
        usage.observe(piece);
        if translator
            .feed(Bytes::copy_from_slice(piece), &mut out)
            .is_err()
        {
            break;
        }
    }
    translator.finish(&mut out);
    let _ = translator.usage();
    let _ = usage.usage();
});
