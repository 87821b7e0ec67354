#!/usr/bin/env python3
"""sira's soak: mixed traffic for MINUTES while the process is watched for leaks.

Started by bench/soak.sh (which builds the binaries); python3 stdlib only.

What it drives, from --clients threads each on its own keep-alive connection:
  JSON and SSE passthrough, both directions of translation (OpenAI <-> Anthropic, and the
  Gemini surface), upstream error statuses, client errors (bad key, bad JSON, unknown model),
  clients that hang up mid-stream, upstreams that cut a stream mid-way, a three-endpoint pool,
  redaction, and cache hits.
Meanwhile the config is rewritten and reloaded (SIGHUP) every --reload-every seconds, and one
of the pool's endpoints is killed and brought back on the same port every --chaos-every
seconds.

What it asserts (exit status 1 otherwise):
  * every request got the answer its kind calls for (an "unexplained error" is anything else:
    a wrong status, a stream that did not end the way its kind ends, a connection error).
    One error is explained: a 502 for a pool request that was in flight on the endpoint when
    it was killed (sira must not send again what may have run); these are counted apart;
  * RSS is flat after warm-up: the last fifth of the run averages within
    max(10 %, 8 MiB) of the warm-up's peak (warm-up = the first fifth, at least 20 s);
  * once the clients have gone, open file descriptors return to the warm-up baseline
    (measured the same way: clients gone, at most --fd-slack above it);
  * every reload was applied, and sira logged no panic.
"""

import argparse
import atexit
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KEY = "sk-sira-soak"
# sha256("sk-sira-soak"), as `sira key hash` prints it.
KEY_HASH = None
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


CONFIG = """\
server:
  listen: ["127.0.0.1:{port}"]
  admin: "127.0.0.1:{admin}"
  threads: 2
  grace_period: 1s
providers:
  openai: {{ kind: openai, endpoints: ["http://{mock}"], api_key: sk-upstream }}
  anthropic: {{ kind: anthropic, endpoints: ["http://{mock}"], api_key: sk-upstream }}
  pool:
    kind: openai-compatible
    endpoints: ["http://{p1}", "http://{p2}", "http://{p3}"]
    health: {{ path: /health, interval: 1s, timeout: 500ms, healthy_after: 1, unhealthy_after: 1 }}
    circuit: {{ failures: 2, window: 10s, open_for: 2s }}
models:
  gpt-4o:
    targets: [{{ provider: openai }}]
    pricing: {{ input: 2.50, output: {price}, cached_input: 1.25 }}
    cache: off
  claude:
    targets: [{{ provider: anthropic, model: claude-sonnet-4-5 }}]
    pricing: {{ input: 3.00, output: 15.00 }}
    cache: off
  pooled:
    targets: [{{ provider: pool, model: gpt-4o }}]
    retry: {{ attempts: 3, backoff: 10ms, max_backoff: 50ms }}
    cache: off
  redacted:
    targets: [{{ provider: openai, model: gpt-4o }}]
    filters: [pii]
    cache: off
  cached:
    targets: [{{ provider: openai, model: gpt-4o }}]
filters:
  pii: {{ kind: redact, patterns: [email, phone, credit-card], mode: placeholder, restore: true }}
cache:
  memory: {{ capacity: 4MiB, ttl: 5s }}
auth:
  keys:
    - {{ name: soak, hash: "{key_hash}", models: [gpt-4o, claude, pooled, redacted, cached] }}
logging:
  level: warn
  access_log: "{tmp}/access.log"
"""


def chat(model, stream=False, content=None):
    body = {"model": model, "messages": MESSAGES, "max_tokens": 64}
    if content is not None:
        body["messages"] = [{"role": "user", "content": content}]
    if stream:
        body["stream"] = True
    return json.dumps(body)


def anthropic(model, stream=False):
    return json.dumps({"model": model, "max_tokens": 64, "messages": MESSAGES, "stream": stream})


def gemini():
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]})


DONE = b"data: [DONE]"


def expect(status, *needles, absent=(), cut=False):
    """`cut`: the body must end without its last chunk, as sira ends an HTTP/1.1 stream that
    its upstream broke (after the surface's error event), so that no client takes it for whole."""
    def check(code, body, truncated):
        if truncated != cut:
            return f"body {'complete' if cut else 'cut short'}: {body[-200:]!r}"
        if code != status:
            return f"status {code}, wanted {status}: {body[:200]!r}"
        for n in needles:
            if n not in body:
                return f"{n!r} missing from {body[-200:]!r}"
        for n in absent:
            if n in body:
                return f"{n!r} present in {body[-200:]!r}"
        return None
    return check


# (name, weight, method, path, body, extra headers, check). Paths are built by sira from the
# model, never from these strings; the checks say how each kind of request must end.
KINDS = [
    ("json", 20, "/v1/chat/completions", lambda: chat("gpt-4o"), {},
     expect(200, b'"chat.completion"')),
    ("stream", 15, "/v1/chat/completions", lambda: chat("gpt-4o", True), {"x-mock-events": "12"},
     expect(200, DONE)),
    ("openai->anthropic json", 6, "/v1/chat/completions", lambda: chat("claude"), {},
     expect(200, b'"chat.completion"')),
    ("openai->anthropic stream", 6, "/v1/chat/completions", lambda: chat("claude", True), {},
     expect(200, DONE)),
    ("anthropic->openai stream", 6, "/v1/messages", lambda: anthropic("gpt-4o", True),
     {"anthropic-version": "2023-06-01"}, expect(200, b"event: message_stop")),
    ("gemini->openai json", 4, "/v1beta/models/gpt-4o:generateContent", gemini, {},
     expect(200, b'"candidates"')),
    ("upstream 429", 3, "/v1/chat/completions", lambda: chat("gpt-4o"),
     {"x-mock-status": "429", "x-mock-retry-after": "1"}, expect(429, b'"error"')),
    ("upstream 400", 3, "/v1/chat/completions", lambda: chat("claude"), {"x-mock-status": "400"},
     expect(400, b'"error"')),
    ("unknown model", 2, "/v1/chat/completions", lambda: chat("no-such-model"), {},
     expect(404, b'"error"')),
    ("bad json", 2, "/v1/chat/completions", lambda: '{"model": "gpt-4o", "messages": [', {},
     expect(400, b'"error"')),
    ("bad key", 2, "/v1/chat/completions", lambda: chat("gpt-4o"), {"authorization": "Bearer sk-wrong"},
     expect(401, b'"error"')),
    ("upstream cut mid-stream", 3, "/v1/chat/completions", lambda: chat("gpt-4o", True),
     {"x-mock-fail-after": "3"}, expect(200, b'"error"', absent=(DONE,), cut=True)),
    ("pool", 12, "/v1/chat/completions", lambda: chat("pooled"), {},
     expect(200, b'"chat.completion"')),
    ("redact stream", 5, "/v1/chat/completions",
     lambda: chat("redacted", True, "Mail jane.doe@example.com or call +1 415 555 0100."), {},
     expect(200, DONE, absent=(b"jane.doe@example.com",))),
    ("cache", 8, "/v1/chat/completions",
     lambda: chat("cached", False, f"question {random.randrange(50)}"), {},
     expect(200, b'"chat.completion"')),
]
CANCEL_WEIGHT = 3


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = {}
        self.errors = {}
        self.explained = {}
        self.examples = []
        # When a pool endpoint was killed (monotonic seconds).
        self.kills = []

    def killed_during(self, started, ended):
        with self.lock:
            return any(started - 0.05 <= k <= ended + 0.05 for k in self.kills)

    def record(self, kind, problem, explained=False):
        with self.lock:
            self.count[kind] = self.count.get(kind, 0) + 1
            if problem and explained:
                self.explained[kind] = self.explained.get(kind, 0) + 1
            elif problem:
                self.errors[kind] = self.errors.get(kind, 0) + 1
                if len(self.examples) < 20:
                    self.examples.append(f"{kind}: {problem}")


def one_request(conn, kind, port):
    name, _, path, body, headers, check = kind
    hdrs = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    hdrs.update(headers)
    conn.request("POST", path, body=body(), headers=hdrs)
    resp = conn.getresponse()
    try:
        data, truncated = resp.read(), False
    except http.client.IncompleteRead as e:
        data, truncated = e.partial, True
    closes = resp.will_close or truncated
    return check(resp.status, data, truncated), closes, resp.status


def cancel(port):
    """A client that reads the head and the first event of a slow stream, then hangs up."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        body = chat("gpt-4o", True).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: soak\r\n"
                  b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-type: application/json\r\n"
                  b"x-mock-events: 40\r\nx-mock-delay-ms: 25\r\n"
                  b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while b"data: " not in got:
            chunk = s.recv(4096)
            if not chunk:
                return f"connection closed before the first event: {got[:200]!r}"
            got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            return f"wanted 200: {got[:200]!r}"
        return None
    finally:
        s.close()


def worker(port, stop, stats, seed, interval):
    """`interval`: seconds between this worker's requests (0: back to back)."""
    rng = random.Random(seed)
    next_at = time.monotonic()
    weights = [k[1] for k in KINDS] + [CANCEL_WEIGHT]
    choices = list(range(len(KINDS))) + [None]
    conn = None
    while not stop.is_set():
        if interval:
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        i = rng.choices(choices, weights)[0]
        if i is None:
            try:
                stats.record("client cancels mid-stream", cancel(port))
            except Exception as e:  # noqa: BLE001
                stats.record("client cancels mid-stream", f"{type(e).__name__}: {e}")
            continue
        kind = KINDS[i]
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.monotonic()
        try:
            problem, closes, status = one_request(conn, kind, port)
            # A request written whole to an endpoint that is then killed may have run, so
            # sira must not send it again (a second generation, billed twice): a 502 is the
            # right answer when a kill fell inside the request's lifetime.
            explained = (status == 502 and kind[0] == "pool"
                         and stats.killed_during(started, time.monotonic()))
            stats.record(kind[0], problem, explained)
            if closes:
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001 - every failure is a finding, none may end the worker
            stats.record(kind[0], f"{type(e).__name__}: {e}")
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


# Every process the soak starts: killed at exit, however the run ends.
SPAWNED = []


@atexit.register
def kill_spawned():
    for p in SPAWNED:
        if p.poll() is None:
            p.kill()


class Mock:
    def __init__(self, bin_dir, tmp, name, port=0):
        self.bin, self.tmp, self.name = bin_dir, tmp, name
        self.port = port or free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [str(self.bin / "sira-mock"), "--listen", f"127.0.0.1:{self.port}", "--threads", "1"],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{self.name}.log", "a"))
        SPAWNED.append(self.proc)
        wait_port(self.port, self.proc)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"


def metric_sum(admin, name, label_filter=""):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label_filter in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def settle_fds(pid, baseline, slack, wait):
    """Waits until the fd count comes down to baseline+slack; returns the last count."""
    deadline = time.monotonic() + wait
    while True:
        fds = proc_status(pid)["fds"]
        if fds <= baseline + slack or time.monotonic() > deadline:
            return fds
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("minutes", type=float)
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0,
                    help="requests per second over all clients (0: as fast as they go)")
    ap.add_argument("--reload-every", type=float, default=10.0)
    ap.add_argument("--chaos-every", type=float, default=30.0)
    ap.add_argument("--fd-slack", type=int, default=4)
    ap.add_argument("--out", help="also write the summary (markdown) to this file")
    args = ap.parse_args()

    bin_dir = Path(args.bin_dir).resolve()
    # The binary's own revision (`sira --version`): the one soaked, wherever it was built.
    version = subprocess.run([str(bin_dir / "sira"), "--version"], capture_output=True,
                             text=True).stdout
    found = re.search(r"\(git ([^,)]+)", version)
    git = found.group(1) if found else "?"
    tmp = Path(tempfile.mkdtemp(prefix="sira-soak-"))
    global KEY_HASH
    KEY_HASH = subprocess.run([str(bin_dir / "sira"), "key", "hash"], input=KEY, text=True,
                              capture_output=True, check=True).stdout.strip()

    mock = Mock(bin_dir, tmp, "mock")
    pool = [Mock(bin_dir, tmp, f"pool{i}") for i in range(3)]
    procs = [mock] + pool
    for m in procs:
        m.start()
    port, admin = free_port(), free_port()
    conf = tmp / "sira.yaml"

    def write_config(price):
        conf.write_text(CONFIG.format(port=port, admin=admin, mock=mock.addr, p1=pool[0].addr,
                                      p2=pool[1].addr, p3=pool[2].addr, price=price,
                                      key_hash=KEY_HASH, tmp=tmp))

    write_config("10.00")
    sira_log = tmp / "sira.log"
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    sira = subprocess.Popen([str(bin_dir / "sira"), "run", "-c", str(conf)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(sira_log, "w"))
    SPAWNED.append(sira)
    wait_port(port, sira)
    log(f"sira pid {sira.pid} on {port}, admin {admin}, mocks {[m.addr for m in procs]}, tmp {tmp}")

    stats = Stats()
    duration = args.minutes * 60
    warmup = max(20.0, duration / 5)
    samples = []  # (seconds since start, rss kB, fds, threads)

    def run_clients(stop):
        interval = args.clients / args.rate if args.rate else 0
        threads = [threading.Thread(target=worker, args=(port, stop, stats, i, interval),
                                    daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        return threads

    # The baseline: the same clients for a few seconds, then gone, so that upstream pools,
    # the cache and every lazily built structure exist before the fds are counted.
    stop = threading.Event()
    threads = run_clients(stop)
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(2)
    baseline_fds = proc_status(sira.pid)["fds"]
    log(f"baseline after warm-up traffic: {baseline_fds} fds")

    stop = threading.Event()
    start = time.monotonic()
    threads = run_clients(stop)
    reloads = 0
    chaos = 0
    next_reload = start + args.reload_every
    next_chaos = start + args.chaos_every
    next_sample = start
    down = None
    failure = None
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        if sira.poll() is not None:
            failure = f"sira exited with {sira.returncode}"
            break
        if now >= next_sample:
            st = proc_status(sira.pid)
            samples.append((now - start, st["VmRSS"], st["fds"], st["Threads"]))
            next_sample += 2.0
        if now >= next_reload:
            reloads += 1
            write_config("10.00" if reloads % 2 == 0 else "10.01")
            sira.send_signal(signal.SIGHUP)
            next_reload += args.reload_every
        if down is None and now >= next_chaos:
            down = pool[reloads % 2 + 1]
            with stats.lock:
                stats.kills.append(time.monotonic())
            down.kill()
            chaos += 1
            back_at = now + min(10.0, args.chaos_every / 2)
        elif down is not None and now >= back_at:
            down.start()
            down = None
            next_chaos = now + args.chaos_every
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    if down is not None:
        down.start()
    elapsed = time.monotonic() - start

    problems = []
    if failure:
        problems.append(failure)
    # Idle upstream connections stay pooled for up to 60 s (src/proxy/exchange/pool.rs,
    # IDLE_TIMEOUT) and are swept every 5 s: the count is read once they may have expired.
    end_fds = settle_fds(sira.pid, baseline_fds, args.fd_slack, 75) if sira.poll() is None else -1
    alive = sira.poll() is None
    applied = metric_sum(admin, "sira_config_reloads_total", 'result="ok"') if alive else -1
    cache_hits = metric_sum(admin, "sira_cache_requests_total", 'result="hit"') if alive else 0
    total = sum(stats.count.values())
    bad = sum(stats.errors.values())

    warm = [s for s in samples if s[0] <= warmup]
    tail = [s for s in samples if s[0] >= duration * 0.8]
    warm_peak = max(s[1] for s in warm) if warm else 0
    tail_mean = sum(s[1] for s in tail) / len(tail) if tail else 0
    bound = max(warm_peak * 0.10, 8 * 1024)
    peak = max(s[1] for s in samples) if samples else 0
    fd_peak = max(s[2] for s in samples) if samples else 0
    after = [s for s in samples if s[0] > warmup]
    slope = 0.0
    if len(after) > 2:
        n = len(after)
        mx = sum(s[0] for s in after) / n
        my = sum(s[1] for s in after) / n
        den = sum((s[0] - mx) ** 2 for s in after)
        if den:
            slope = sum((s[0] - mx) * (s[1] - my) for s in after) / den * 3600 / 1024

    if bad:
        problems.append(f"{bad} unexplained errors")
    # A run that passes on little traffic proves nothing: every kind must have run, and the
    # workers must all have lasted to the end.
    kinds = [k[0] for k in KINDS] + ["client cancels mid-stream"]
    rare = [k for k in kinds if stats.count.get(k, 0) < 10]
    if rare:
        problems.append(f"kinds that hardly ran: {rare}")
    if any(t.is_alive() for t in threads):
        problems.append("a client thread did not stop")
    if cache_hits < 1:
        problems.append("the cache never answered a request")
    if tail_mean > warm_peak + bound:
        problems.append(f"RSS grew: last fifth averages {tail_mean/1024:.1f} MiB, warm-up peak "
                        f"{warm_peak/1024:.1f} MiB (bound +{bound/1024:.1f} MiB)")
    if end_fds > baseline_fds + args.fd_slack:
        problems.append(f"fds did not come back: {end_fds} open, baseline {baseline_fds}")
    if applied != reloads:
        problems.append(f"{reloads} reloads sent, {applied:.0f} applied")
    panics = [l for l in sira_log.read_text(errors="replace").splitlines() if "panicked" in l]
    if panics:
        problems.append(f"sira panicked: {panics[0][:300]}")

    rows = "\n".join(f"| {k} | {stats.count[k]} | {stats.explained.get(k, 0)} | "
                     f"{stats.errors.get(k, 0)} |" for k in sorted(stats.count))
    explained = sum(stats.explained.values())
    summary = f"""\
### Soak: {args.minutes:g} min, {args.clients} clients{f", {args.rate:g} requests/s" if args.rate else ""} ({time.strftime('%Y-%m-%d %H:%M')}, {git})

| | |
|---|---|
| requests | {total} ({total / elapsed:.0f}/s); unexplained errors: {bad}; 502s of requests in flight on an endpoint when it was killed: {explained} |
| reloads (SIGHUP, config changed each time) | {reloads} sent, {applied:.0f} applied |
| cache hits | {cache_hits:.0f} |
| pool endpoint killed and restarted | {chaos} times |
| RSS | warm-up peak {warm_peak/1024:.1f} MiB, run peak {peak/1024:.1f} MiB, last fifth mean {tail_mean/1024:.1f} MiB (bound: warm-up peak + {bound/1024:.1f} MiB); trend after warm-up {slope:+.1f} MiB/hour |
| file descriptors | baseline {baseline_fds}, peak under load {fd_peak}, after the clients left {end_fds} |
| threads | {samples[-1][3] if samples else '?'} at the end |
| verdict | {"ok" if not problems else "FAILED: " + "; ".join(problems)} |

| request kind | count | 502, endpoint killed in flight | unexplained |
|---|---:|---:|---:|
{rows}
"""
    print(summary)
    for e in stats.examples:
        log(f"example: {e}")
    if args.out:
        Path(args.out).write_text(summary)

    sira.send_signal(signal.SIGTERM)
    try:
        sira.wait(timeout=15)
    except subprocess.TimeoutExpired:
        sira.kill()
    for m in procs:
        if m.proc.poll() is None:
            m.kill()
    if problems:
        log(f"kept for inspection: {tmp}")
        sys.exit(1)
    subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
