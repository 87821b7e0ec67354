#!/usr/bin/env bash
# sira's benchmark: one command that builds the release binaries, installs the load tools
# and nginx when missing, and runs every scenario against direct, nginx and sira.
#
#   bash bench/run.sh            full run (a few minutes); writes bench/RESULTS.md
#   bash bench/run.sh --smoke    same code paths, seconds per scenario (CI); exits non-zero
#                                if any scenario fails
#
# --floor also builds and measures bench/pingora-floor (Pingora's own ProxyHttp with nothing
# added) in scenarios a, c and g: the share of sira's cost that is Pingora's. It adds ~3
# minutes of build on 2 cores, so the default run leaves it out.
#
# Other options (passed to bench/bench.py): --only ac (scenario letters), --targets
# nginx,sira, --rounds N (the scenarios N times interleaved, each figure the round with the
# median CPU; what redaction adds is the mean of each round's (m)/(a) and (n)/(c), ± its
# standard error: `--only acmn --rounds 11` for its ±10 %), --out FILE, --json FILE,
# --keep-tmp, --no-profile (skip callgrind), --bin-dir
# DIR (default target/release; target/debug builds the debug profile instead); and for this
# script: --no-build (use the binaries as they are), --install-oha (cargo install oha, several
# minutes on 2 cores, for fixed-rate latency; without oha, wrk paced by a Lua delay() stands
# in and the table says so).
set -euo pipefail

script=$(readlink -f "$0")
cd "$(dirname "$script")/.."

build=1
floor=0
install_oha=0
profile=release
args=()
prev=
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        --install-oha) install_oha=1 ;;
        --floor) floor=1 ;;
        -h|--help) sed -n '2,/^set -e/p' "$script" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) args+=("$arg") ;;
    esac
    # --bin-dir target/debug: build (and measure) the debug binaries, e.g. for a CI smoke run
    # that already has them.
    if [ "$prev" = --bin-dir ]; then
        case "$arg" in */debug | */debug/) profile=dev ;; esac
    fi
    prev=$arg
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
# (r): HTTP/2 with 100 streams on one connection; (q): resumed TLS handshakes.
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v openssl >/dev/null || missing+=(openssl)
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    missing+=(nginx-light)
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    # Installing nginx would start the system's nginx on port 80 through invoke-rc.d; the
    # harness runs its own, so forbid service starts for the duration of the install (the
    # usual policy-rc.d convention), unless the machine already has a policy of its own.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        made_policy=1
    fi
    trap '[ "$made_policy" = 1 ] && as_root rm -f "$policy"' EXIT
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if [ "$made_policy" = 1 ]; then as_root rm -f "$policy"; made_policy=0; fi
fi

if [ "$install_oha" = 1 ] && ! command -v oha >/dev/null; then
    log "cargo install oha (a few minutes on 2 cores)"
    cargo install oha --locked --quiet || log "oha did not build: wrk stands in for fixed rates"
fi
# cargo install puts it here; the harness looks it up on PATH.
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

# --- binaries ------------------------------------------------------------------------------
packages=(-p sira -p sira-mock)
if [ "$floor" = 1 ]; then
    packages+=(-p pingora-floor)
    args+=(--targets direct,nginx,pingora,sira)
fi
if [ "$build" = 1 ]; then
    bash packaging/deps.sh
    # The system's zstd when it is there, as tests/run.sh (.cargo/config.toml).
    if pkg-config --exists libzstd 2>/dev/null; then export ZSTD_SYS_USE_PKG_CONFIG=1; fi
    log "cargo build --profile $profile ${packages[*]}"
    cargo build --profile "$profile" --quiet "${packages[@]}"
fi

# --- limits --------------------------------------------------------------------------------
# Scenario (e) holds 10,000 streams: two sockets each in the gateway. Raise the open-files
# limit as far as allowed; bench.py scales (e) down (and says so) if it stays too low.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec python3 bench/bench.py --nofile "$(ulimit -n)" "${args[@]}"
