//! lua-free filters
