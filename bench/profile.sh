#!/usr/bin/env bash
# Instruction profile of sira per request (scenarios a, b) or per 100-event stream (c, d),
# with valgrind's callgrind: instruction counts are repeatable on a noisy shared machine,
# where timings are not.
#
#   bash bench/profile.sh a [N]     N small JSON requests (default 2000)
#   bash bench/profile.sh b [N]     the same, translated OpenAI→Anthropic (default 2000)
#   bash bench/profile.sh c [N]     N 100-event SSE streams (default 200)
#   bash bench/profile.sh d [N]     N 100-event streams translated Anthropic→OpenAI (default 200)
#   bash bench/profile.sh r [N]     the reverse: an Anthropic client, an OpenAI provider's
#                                   100-event stream (default 200)
#   bash bench/profile.sh f [N]     (a) through seven filters (ip-allow, deny, set-field,
#                                   remove-field, clamp, headers, max-prompt-tokens; 2000)
#   bash bench/profile.sh s [N]     (a) over h2c, 100 streams at once on one connection
#                                   (h2load; default 2000)
#
# Runs the release binary (profile.release keeps line tables), warms up, zeroes the
# counters, sends N requests one after another on one keep-alive connection, dumps, and
# prints instructions per request plus the top inclusive and self costs. The raw profile is
# kept for `callgrind_annotate` / kcachegrind; its path is printed last.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:-a}
case "$scenario" in
    a) n=${2:-2000}; events=7; stream=false; model=gpt-4o ;;
    b) n=${2:-2000}; events=7; stream=false; model=claude-bench ;;
    c) n=${2:-200}; events=96; stream=true; model=gpt-4o ;;
    # The Anthropic stream's 94 deltas plus its 6 framing events make 100, as in the bench.
    d) n=${2:-200}; events=94; stream=true; model=claude-bench ;;
    r) n=${2:-200}; events=96; stream=true; model=gpt-4o ;;
    # (a) through the three-endpoint consistent-hash pool: p − a is the selection's cost.
    p) n=${2:-2000}; events=7; stream=false; model=gpt-4o-pool ;;
    # (a) and (c) with `redact` on request and response (bench scenarios m and n): m − a
    # and n − c are redaction's cost.
    m) n=${2:-2000}; events=7; stream=false; model=gpt-4o-redact ;;
    # (a) through ip-allow, deny, set-field, remove-field, clamp, headers and
    # max-prompt-tokens: f − a is what those filters cost together.
    f) n=${2:-2000}; events=7; stream=false; model=gpt-4o-filters ;;
    n) n=${2:-200}; events=96; stream=true; model=gpt-4o-redact ;;
    # (a) over HTTP/2 (h2c, prior knowledge), 100 streams at once on one connection with
    # h2load: s − a is what multiplexing costs per request (bench scenario s without TLS).
    s) n=${2:-2000}; events=7; stream=false; model=gpt-4o ;;
    *) echo "usage: bash bench/profile.sh a|b|c|d|r|p|m|n|f|s [N]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
if [ "$scenario" = s ] && ! command -v h2load >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
bin=${SIRA_BIN_DIR:-target/release}
[ -x "$bin/sira" ] || cargo build --release --quiet -p sira -p sira-mock

out=$(mktemp -d /tmp/sira-profile-XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The mock, then sira under callgrind.
coproc MOCK { exec "$bin/sira-mock" --listen 127.0.0.1:0 --threads 1; }
pids+=("$MOCK_PID")
read -r line <&"${MOCK[0]}"
upstream=${line##* }
port=$(free_port)
admin=$(free_port)
# bench/sira.yaml has a TLS listener too (scenario k): it needs a certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
BENCH_LISTEN=127.0.0.1:$port BENCH_ADMIN=127.0.0.1:$admin BENCH_UPSTREAM=$upstream \
BENCH_TLS_LISTEN=127.0.0.1:$(free_port) BENCH_TLS_CERT=$out/cert.pem BENCH_TLS_KEY=$out/key.pem \
BENCH_TMP=$out SIRA_UPGRADE_SOCK=$out/upgrade.sock \
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
    "$bin/sira" run -c bench/sira.yaml 2>"$out/valgrind.log" &
vg=$!
pids+=("$vg")
for _ in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.1
done

path=/v1/chat/completions
if [ "$scenario" = r ]; then
    path=/v1/messages
    body='{"model":"'$model'","stream":true,"system":"You are a helpful assistant.","messages":[{"role":"user","content":"Hello! What is the capital of France?"}],"max_tokens":256}'
    expect='message_stop'
elif [ "$stream" = true ]; then
    body='{"model":"'$model'","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello! What is the capital of France?"}],"max_tokens":256}'
    expect='[DONE]'
else
    body='{"model":"'$model'","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello! What is the capital of France?"}],"max_tokens":256}'
    expect=''
fi
if [ "$scenario" = m ] || [ "$scenario" = n ]; then
    # The bench's prompt with personal data (bench.py's PII_PROMPT).
    body=${body/Hello! What is the capital of France?/Hello! Write to jane.doe@example.com or call +1 415 555 0100 about card 4111 1111 1111 1111. What is the capital of France?}
fi
printf '%s' "$body" >"$out/body.json"
drive() {
    if [ "$scenario" = s ]; then
        h2load -c1 -m100 -n "$1" -d "$out/body.json" -H "Authorization: Bearer sk-sira-bench" \
            -H "x-mock-events: $events" -H "content-type: application/json" \
            "http://127.0.0.1:$port$path" >"$out/h2load.txt"
        local failed
        failed=$(awk '/^requests:/ {print $10}' "$out/h2load.txt")
        printf '{"errors": %s}' "${failed:-unknown}"
        return
    fi
    python3 bench/sse_client.py probe --url "http://127.0.0.1:$port$path" \
        --body "$out/body.json" --header "Authorization: Bearer sk-sira-bench" \
        --header "x-mock-events: $events" --header "x-session-id: profile" \
        --expect "$expect" --warmup 0 -n "$1" --timeout 120
}
drive 50 >/dev/null                      # warm-up: pools, lazies, allocator
callgrind_control --zero "$vg" >/dev/null
drive "$n" >"$out/drive.json"
callgrind_control --dump="measured" "$vg" >/dev/null
sleep 1
kill -INT "$vg"; wait "$vg" 2>/dev/null || true

dump=$(ls -t "$out"/callgrind.out.* 2>/dev/null | grep -v '\.out$' | head -1 || true)
[ -n "$dump" ] || dump="$out/callgrind.out"
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
errors=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["errors"])' "$out/drive.json")
echo "scenario ($scenario): $n sequential requests, $errors errors"
echo "instructions per request: $(( total / n ))  (total $total)"
echo
# Written to files first: `head` closing a pipe would trip pipefail.
callgrind_annotate --inclusive=yes "$dump" >"$out/inclusive.txt" 2>/dev/null || true
callgrind_annotate "$dump" >"$out/self.txt" 2>/dev/null || true
echo "== top inclusive =="
sed -n '/^Ir/,$p' "$out/inclusive.txt" | sed -n '4,48p' | cut -c1-220
echo
echo "== top self =="
sed -n '/^Ir/,$p' "$out/self.txt" | sed -n '4,48p' | cut -c1-220
echo
echo "profile: $dump"
