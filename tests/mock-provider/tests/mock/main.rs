//! Integration tests of sira-mock: start it, talk raw HTTP/1.1 to it, compare with fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client;
mod errors;
mod process;
mod shapes;
mod stream_knobs;
mod streams;
