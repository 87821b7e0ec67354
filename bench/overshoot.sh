#!/usr/bin/env bash
# How far hosts sharing a limit through Redis overshoot it: 2 and 4 real sira processes on one
# redis-server (sync 100ms), every host hammered by 6 clients, a 300/min request limit. The
# figure is admitted requests against what one host holding the whole bucket would admit
# over the same time (capacity + refill). Usage: bash bench/overshoot.sh [SECONDS, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
for hosts in 2 4; do
  SIRA_OVERSHOOT_HOSTS="$hosts" SIRA_OVERSHOOT_SECS="$secs" \
    cargo test --quiet --test it four_hosts_admit_within_the_limit -- --nocapture 2>&1 |
    grep '^shared limit'
done
