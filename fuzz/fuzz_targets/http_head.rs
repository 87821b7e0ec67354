//! The HTTP/1 request as sira reads it from a client (`edge::parse_request`: its head into
//! a `RequestHeader`, its framing rules, its body as framed), then the raw head's checks,
//! the route, the key lookup, and the header set sent upstream. Never a panic; a key is accepted only when the head carries it; no credential of the
//! client's, no hop-by-hop field and not its `accept-encoding` ever reaches the provider.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use sira::auth::{authenticate, hash_key, parse_hash, KeyEntry, KeyTable};

const KEY: &str = "sk-fuzz-key";

fn table() -> &'static KeyTable {
    static TABLE: OnceLock<KeyTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = KeyTable::default();
        let digest = parse_hash(&hash_key(KEY)).expect("a hash sira made parses");
        table.insert(KeyEntry::new("fuzz", digest, None, Vec::new()));
        table
    })
}

fuzz_target!(|data: &[u8]| {
    // sira's own reader: the head, sira's framing rules, then the body as framed.
    let (header, body) = match sira::proxy::edge::parse_request(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) | Err(_) => return,
    };
    if let Ok(body) = &body {
        assert!(body.len() <= data.len(), "a body larger than what arrived");
    }
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(len)) = req.parse(data) else {
        panic!("sira read a head httparse does not find whole");
    };
    let raw = &data[..len];
    let headers: &HeaderMap = &header.headers;
    let refused = sira::proxy::edge::ambiguous_head(
        raw,
        headers.contains_key(http::header::TRANSFER_ENCODING),
    );
    if refused.is_some() {
        return;
    }
    if let (Some(method), Some(target)) = (req.method, req.path) {
        if let Ok(method) = Method::from_bytes(method.as_bytes()) {
            let path = target.split_once('?').map_or(target, |(p, _)| p);
            let _ = sira::routes::classify(&method, path);
        }
    }
    let query = req.path.and_then(|t| t.split_once('?')).map(|(_, q)| q);
    if authenticate(table(), &KeyTable::default(), headers, query, None).is_ok() {
        let carried = memmem(raw, KEY.as_bytes());
        assert!(carried, "a key was accepted that the head does not carry");
    }
    if let Ok(upstream) = sira::proxy::hop::upstream_request(headers) {
        for name in [
            "authorization",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "cookie",
            "proxy-authorization",
            "connection",
            "transfer-encoding",
            "content-length",
            "host",
            // The provider request module asks for identity itself: the client's coding
            // preference never reaches the provider.
            "accept-encoding",
        ] {
            assert!(
                !upstream.contains_key(name),
                "{name} would reach the provider"
            );
        }
    }
});

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
