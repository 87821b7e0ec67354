//! sira: an AI API gateway on Pingora.
pub mod format;
pub mod usage;
pub mod sse;
pub mod auth;
pub mod config;
pub mod glob;
pub mod metrics;
pub mod models;
pub mod provider;
pub mod routes;
