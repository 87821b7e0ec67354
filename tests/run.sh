#!/usr/bin/env bash
# The test suite, runnable on a fresh machine: installs what the tests need, then runs every
# unit and integration test of the workspace (integration tests start the real sira binary
# and the in-repo mock provider on ephemeral loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server: the tests of what sira shares across hosts run a real one; openssl makes the
# RSA keys of the TLS tests (rcgen cannot).
bash packaging/deps.sh redis-server:redis-server openssl:openssl
# Link the system's zstd when it is there (.cargo/config.toml says why).
if pkg-config --exists libzstd 2>/dev/null; then export ZSTD_SYS_USE_PKG_CONFIG=1; fi
cargo test --workspace --all-targets "$@"

# Supply chain (deny.toml): every dependency's licence, banned crates, crates.io only; and no
# dependency declared but unused. The advisory database needs the network: `cargo deny check
# advisories` is run by hand where there is one (README, Operations).
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
command -v cargo-machete >/dev/null || cargo install --locked cargo-machete
cargo deny --offline check licenses bans sources
cargo machete
