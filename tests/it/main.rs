//! Integration tests: the real `sira` binary on ephemeral loopback ports, in front of the
//! in-repo mock provider (`sira-mock`), which speaks the recorded wire formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod redis;
mod support;

mod accounting;
mod adversarial;
mod agents;
mod auth;
mod balancing;
mod bodies;
mod bounds;
mod cache;
mod cache_formats;
mod cache_scopes;
mod cli;
mod client_wire;
mod dns;
mod errors;
mod failover;
mod faults;
mod filter_scopes;
mod filters;
mod framing;
mod issued_keys;
mod jwt;
mod lifecycle;
mod limits;
mod observability;
mod pooling;
mod raw;
mod reload;
mod secrets;
mod serving;
mod shared_limits;
mod stored;
mod streaming;
mod targets;
mod tls;
mod tls_edge;
mod tls_sessions;
mod tls_upstream;
mod translation;
mod wire;
