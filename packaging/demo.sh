#!/usr/bin/env bash
# A working gateway on a fresh machine, no provider account or internet needed: builds sira
# and the repo's mock provider, starts the mock on 127.0.0.1:9000 and sira on
# 127.0.0.1:8080 with conf/demo.yaml. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/deps.sh
# The debug profile builds in a fraction of the release time and is plenty for a demo;
# benchmarks use the release profile (bench/run.sh).
# The system's zstd when it is there, as tests/run.sh (.cargo/config.toml).
if pkg-config --exists libzstd 2>/dev/null; then export ZSTD_SYS_USE_PKG_CONFIG=1; fi
cargo build -p sira -p sira-mock

./target/debug/sira-mock --listen 127.0.0.1:9000 --events 8 --delay-ms 50 &
mock=$!
trap 'kill $mock 2>/dev/null || true' EXIT INT TERM

cat <<'TRY'

  sira is starting on http://127.0.0.1:8080 (admin on 127.0.0.1:9901) in front of a mock provider.
  In another terminal:

    curl http://127.0.0.1:8080/v1/chat/completions -H "Authorization: Bearer sk-sira-demo" \
      -d '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}'

    curl -N http://127.0.0.1:8080/v1/messages -H "x-api-key: sk-sira-demo" \
      -d '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hello"}]}'

    curl http://127.0.0.1:9901/metrics | grep sira_tokens_total

TRY
./target/debug/sira run -c conf/demo.yaml
