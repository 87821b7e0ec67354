//! sira: an AI API gateway on Pingora.
pub mod format;
pub mod usage;
pub mod sse;
