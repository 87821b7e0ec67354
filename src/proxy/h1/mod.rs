//! What sira's two HTTP/1 sides share: the client's requests ([`super::edge`]) and the
//! providers' answers ([`super::exchange`]) are framed by the same rules, and their fields
//! are parsed into an `http::HeaderMap` the same way.

pub mod fields;
pub mod framing;
