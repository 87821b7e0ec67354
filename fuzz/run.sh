#!/usr/bin/env bash
# Every fuzz target for SECONDS each (default 60), seeded from the recorded wire fixtures
# and the agents' first requests: fails on any crash, panic, timeout (10 s an input) or
# out-of-memory (2 GiB). Prints each target's executions; `fuzz/artifacts/<target>/` keeps
# what crashed, to reproduce with `cargo +nightly fuzz run <target> <file>`.
#
#   bash fuzz/run.sh 10       CI's short run
#   bash fuzz/run.sh 3600     the long run recorded in README.md
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
if pkg-config --exists libzstd 2>/dev/null; then export ZSTD_SYS_USE_PKG_CONFIG=1; fi

# Seeds: every fixture, prefixed with the bytes the targets read first (the format pair and
# the number of cuts), so that a seed is a real message in its own format.
python3 - <<'PY'
import os, pathlib
root = pathlib.Path("fuzz/corpus")
fixtures = pathlib.Path("tests/fixtures")
formats = {"openai": 0, "azure": 0, "openai_compat": 0, "openai_responses": 1,
           "anthropic": 2, "gemini": 3}
targets = ["sse_framer", "stream_translate", "request_translate", "response_translate",
           "config", "jwt", "cache_key", "redact_stream", "http_head"]
for t in targets:
    (root / t).mkdir(parents=True, exist_ok=True)
def seed(target, name, data):
    (root / target / f"seed-{name}").write_bytes(data)
for d, fmt in formats.items():
    for f in sorted(p for p in (fixtures / d).rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.suffix == ".sse":
            seed("sse_framer", f.name, bytes([3, 40, 90, 7]) + data)
            for to in range(4):
                seed("stream_translate", f"{f.name}-{to}", bytes([fmt, to, 3, 50, 120, 9]) + data)
        elif f.suffix == ".json":
            for to in range(4):
                seed("request_translate", f"{f.name}-{to}", bytes([fmt, to]) + data)
                seed("response_translate", f"{f.name}-{to}", bytes([fmt, to]) + data)
            seed("cache_key", f.name, data)
import base64, hashlib, hmac, json
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
claims = b64(json.dumps({"iss": "https://issuer.example", "aud": "sira", "sub": "s",
                         "exp": 4102444800, "org": "t", "models": ["m"]}).encode())
for alg in ["HS256", "none", "RS256", "HS512"]:
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    # Signed with another secret: the fuzzer must never turn one into an accepted token.
    sig = b64(hmac.new(b"not-the-secret", head + b"." + claims, hashlib.sha256).digest())
    seed("jwt", alg, head + b"." + claims + b"." + sig)
clients = pathlib.Path("../shared/fixtures/clients")
for f in sorted(clients.glob("*.json")) if clients.is_dir() else []:
    data = f.read_bytes()
    for fmt in range(4):
        seed("request_translate", f"{f.name}-{fmt}", bytes([fmt, fmt]) + data)
    seed("cache_key", f.name, data)
for f in sorted(pathlib.Path("conf").rglob("*.yaml")):
    seed("config", f.name, f.read_bytes())
seed("redact_stream", "pii", bytes([4, 9, 17, 3, 30]) +
     b"Mail jane.doe@example.com, card 4111 1111 1111 1111, call +1 415 555 0100, key sk-abcdefghijklmnopqrstuvwxyz12")
# The heads the SDKs and agents send, each key placement, and the framings sira refuses.
heads = {
    "openai": b"POST /v1/chat/completions HTTP/1.1\r\nhost: api.example\r\nauthorization: Bearer sk-fuzz-key\r\ncontent-type: application/json\r\naccept-encoding: gzip\r\ncontent-length: 2\r\n\r\n",
    "anthropic": b"POST /v1/messages HTTP/1.1\r\nhost: h\r\nx-api-key: sk-fuzz-key\r\nanthropic-version: 2023-06-01\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\ncontent-length: 2\r\n\r\n",
    "gemini": b"POST /v1beta/models/flash:streamGenerateContent?alt=sse&key=sk-fuzz-key HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n",
    "azure": b"POST /openai/deployments/d/chat/completions?api-version=2024-10-21 HTTP/1.1\r\nhost: h\r\napi-key: sk-fuzz-key\r\ncookie: s=1\r\n\r\n",
    "smuggle": b"POST /v1/chat/completions HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nx-a: b\n\r\n",
}
for name, head in heads.items():
    seed("http_head", name, head)
# What the runs found once, replayed first by every run as regression inputs.
for f in sorted(pathlib.Path("fuzz/known").glob("*")):
    target = next((t for t in targets if f.name.startswith(t + "-")), None)
    if target:
        seed(target, f"known-{f.name}", f.read_bytes())
PY

# A dictionary per input language: the formats' own tokens for what reads them.
dict_for() {
    case "$1" in
        http_head) echo http ;;
        config) echo config common ;;
        jwt) echo common ;;
        redact_stream) echo redact common openai anthropic gemini responses ;;
        *) echo common openai anthropic gemini responses ;;
    esac
}

cargo +nightly fuzz build -O
failed=0
for target in $(cargo +nightly fuzz list); do
    log=$(mktemp)
    dict=$(mktemp)
    for part in $(dict_for "$target"); do cat "fuzz/dict/$part.dict" >>"$dict"; done
    if cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -dict="$dict" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
        echo "fuzz $target: ${runs:-?} executions in ${seconds}s, no crash"
    else
        echo "fuzz $target: FAILED (see fuzz/artifacts/$target/)"
        tail -40 "$log"
        failed=1
    fi
    rm -f "$log" "$dict"
done
exit "$failed"
