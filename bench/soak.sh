#!/usr/bin/env bash
# sira's soak: mixed traffic for MINUTES against the real binary, sampling its RSS and file
# descriptors, with a reload every 10 s and a pool endpoint dying and returning (bench/soak.py
# says what it drives and asserts). Exits non-zero on any unexplained error, RSS growth past
# its bound after warm-up, fds not back to baseline, a reload not applied, or a panic.
#
#   bash bench/soak.sh 60                 the hour recorded in README.md (release build)
#   bash bench/soak.sh 2 --bin-dir target/debug --no-build     CI's short version
#
# Other options go to bench/soak.py: --clients N (8), --reload-every S (10),
# --rate R (requests/s over all clients; default unpaced), --chaos-every S (30),
# --fd-slack N (4), --out FILE (the summary as markdown).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9.]+$ ]]; then
    sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
minutes=$1
shift
build=1
bin_dir=target/release
args=()
prev=
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        *) args+=("$arg") ;;
    esac
    if [ "$prev" = --bin-dir ]; then bin_dir=$arg; fi
    prev=$arg
done
if [ "$build" = 1 ]; then
    if pkg-config --exists libzstd 2>/dev/null; then export ZSTD_SYS_USE_PKG_CONFIG=1; fi
    profile=--release
    case "$bin_dir" in */debug | */debug/) profile= ;; esac
    cargo build $profile --bin sira -p sira -p sira-mock
fi
exec python3 bench/soak.py "$minutes" --bin-dir "$bin_dir" "${args[@]}"
