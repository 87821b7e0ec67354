#!/usr/bin/env python3
"""sira's benchmark harness: every scenario against direct, nginx and sira, in one run.

Started by bench/run.sh (which installs the tools and builds the binaries); see
`bash bench/run.sh --help`. python3 stdlib only.

Method (why it is built this way):
  * On a shared 2-core machine absolute figures drift from run to run, so every figure is
    compared with the other targets measured in the same run, as a ratio.
  * The gateway (nginx or sira) is pinned to one core, the load generator and the mock to
    the other. The load core saturates before a fast proxy does, so requests/s alone
    cannot rank nginx and sira; CPU time per request of the gateway process can:
    utime+stime from /proc/<pid>/stat (the whole process tree, reaped children included, so
    nginx's master and workers all count) divided by the requests completed.
  * Each (scenario, target) pair gets a freshly started gateway, so VmHWM (peak RSS) belongs
    to that scenario alone.
  * "direct" is the load generator talking to the mock itself: the physical limit.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
KEY = "sk-sira-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ["direct", "nginx", "sira"]
# The bare Pingora proxy (bench/pingora-floor): measured in the passthrough scenarios to show
# which part of sira's cost is Pingora's own request cycle and which is sira's work.
FLOOR = "pingora"
ALL_TARGETS = ["direct", "nginx", FLOOR, "sira"]
# The floor is opt-in (bench/run.sh --floor): its release build with thin LTO adds ~3 minutes
# of a 2-core machine to the one command.
DEFAULT_TARGETS = ["direct", "nginx", "sira"]
PASSTHROUGH = ["direct", "nginx", FLOOR, "sira"]
KEEP_MARKER = "<!-- everything below this line is kept when the harness rewrites this file -->"

# Durations and sizes. The whole command (a from-scratch release build of ~7 minutes on 2
# cores included) must stay under 10 minutes, so the full run is sized to a little over 2;
# CPU per request over 3 s of load (~300 clock ticks of a busy core) is already steadier
# than the machine it runs on. Smoke runs the same code paths for seconds, for CI.
# (e): the mock's stream is role, one content event, finish, usage, [DONE] with
# hold_delay_ms between consecutive events, so a stream lives 4 gaps (10 s): long enough
# for ~10,000 to be open at once (opening them takes ~5-6 s), short enough not to idle.
FULL = dict(warm_s=1, load_s=3, conns=16, stream_conns=8, rate=200, rate_s=3, probe_n=200,
            hold_n=10000, hold_events=1, hold_delay_ms=2500, reload_s=6, big_s=3,
            big_conns=4)
SMOKE = dict(warm_s=0, load_s=1, conns=8, stream_conns=4, rate=200, rate_s=1, probe_n=20,
             hold_n=200, hold_events=1, hold_delay_ms=500, reload_s=3, big_s=1, big_conns=2)

# The targets, checked in full runs (a smoke run is too short to judge them).
TTFB_BUDGET_US = 150
DELAYED_ACK_FLOOR_MS = 5.0
IDLE_RSS_MB = 20
PER_STREAM_KB = 64
LATENCY_BUDGET_MS = 0.05


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A scenario could not run or produced failures: a smoke run exits non-zero."""


# --- processes ---------------------------------------------------------------------------

class Processes:
    """Every process the harness starts, each in its own session so that its children
    (nginx's workers) are stopped with it; stopped by pid on every exit path."""

    def __init__(self):
        self.live = []

    def spawn(self, cmd, cpus=None, **kw):
        if cpus is not None:
            cmd = ["taskset", "-c", cpus] + cmd  # taskset execs: the pid is the command's
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.live.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, wait=5.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        else:
            # The leader is gone; make sure nothing it started lingers in its group.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.live.remove(p)
        except ValueError:  # already stopped (a watchdog and the main thread may race)
            pass

    def stop_all(self):
        for p in list(reversed(self.live)):
            self.stop(p, wait=3.0)


PROCS = Processes()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def http(method, url, body=None, headers=None, timeout=10.0):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    # (k)'s certificate is the run's own, self-signed.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


# --- /proc -------------------------------------------------------------------------------

def proc_tree(root):
    """`root` and every live descendant."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(root):
    """utime+stime of the tree, plus cutime+cstime: children that exited (nginx workers
    replaced by a reload) were reaped into their parent's counters."""
    total = 0
    for pid in proc_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])
    return total


def mem_kb(root, field):
    """Sum of a /proc/<pid>/status field (VmRSS, VmHWM) over the tree, in kB."""
    total = 0
    for pid in proc_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


# --- targets -----------------------------------------------------------------------------

class Target:
    """One way to reach the mock. `root` is the gateway process (None for direct)."""

    def __init__(self, name, base, proc=None, admin=None, tls_base=None):
        self.name, self.base, self.proc, self.admin = name, base, proc, admin
        # The same gateway's TLS listener (scenario k).
        self.tls_base = tls_base

    @property
    def root(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is None or self.proc.poll() is None


class Env:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.bin = Path(args.bin_dir)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            # The last core for the gateway, the rest for load generator and mock.
            self.gw_cpus = str(cpus[-1])
            self.load_cpus = ",".join(str(c) for c in cpus[:-1])
        else:
            self.gw_cpus = self.load_cpus = None
            log("one CPU only: no pinning, figures will mix gateway and load")
        self.mock = None
        self.mock_addr = None
        # One ECDSA P-256 certificate for every TLS listener of the run (scenario k).
        self.cert, self.key = str(tmp / "bench-tls.pem"), str(tmp / "bench-tls.key")
        made = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.key, "-out", self.cert,
             "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            capture_output=True, text=True)
        if made.returncode != 0:
            raise BenchError(f"openssl could not make the TLS certificate: {made.stderr[-300:]}")
        self.nofile = int(args.nofile)
        self.oha = shutil.which("oha")
        self.oha_json = None
        self.seq = 0
        # The source the binaries were built from: read now, other people commit meanwhile.
        self.git = (
            subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True).stdout.strip() or "?",
            subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip())

    def path(self, name):
        self.seq += 1
        return str(self.tmp / f"{self.seq:03d}-{name}")

    def start_mock(self):
        p = PROCS.spawn([str(self.bin / "sira-mock"), "--listen", "127.0.0.1:0", "--threads", "1"],
                        cpus=self.load_cpus, stdout=subprocess.PIPE,
                        stderr=open(self.tmp / "mock.log", "w"), text=True)
        line = p.stdout.readline()
        m = re.search(r"listening on http://(\S+)", line)
        if not m:
            raise BenchError(f"sira-mock did not start: {line!r}")
        self.mock = p
        self.mock_addr = m.group(1)
        log(f"mock on {self.mock_addr} (cpu {self.load_cpus})")

    def start(self, name, tag):
        """Starts a fresh target for one scenario."""
        if name == "direct":
            return Target("direct", f"http://{self.mock_addr}")
        if name == "nginx":
            return self.start_nginx(tag)
        if name == FLOOR:
            return self.start_floor(tag)
        return self.start_sira(tag)

    def start_floor(self, tag):
        port = free_port()
        p = PROCS.spawn([str(self.bin / "pingora-floor"), f"127.0.0.1:{port}", self.mock_addr],
                        cpus=self.gw_cpus, stdout=subprocess.DEVNULL,
                        stderr=open(self.tmp / f"pingora-{tag}.log", "w"))
        wait_port(port, p)
        return Target(FLOOR, f"http://127.0.0.1:{port}", p)

    def start_nginx(self, tag):
        port, tls_port = free_port(), free_port()
        conf = (BENCH / "nginx.conf").read_text()
        user = "user root;" if os.geteuid() == 0 else "# (runs as the current user)"
        conf = (conf.replace("@USER@", user).replace("@TMP@", str(self.tmp))
                .replace("@LISTEN@", f"127.0.0.1:{port}").replace("@UPSTREAM@", self.mock_addr)
                .replace("@TLS_LISTEN@", f"127.0.0.1:{tls_port}")
                .replace("@CERT@", self.cert).replace("@KEY@", self.key)
                .replace("@NOFILE@", str(self.nofile))
                .replace("@CONNECTIONS@", str(max(1024, self.nofile - 32))))
        path = self.tmp / "nginx.conf"
        path.write_text(conf)
        cmd = [self.args.nginx, "-p", str(self.tmp), "-c", str(path),
               "-e", str(self.tmp / "nginx-error.log")]
        check = subprocess.run(cmd + ["-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise BenchError(f"nginx -t failed: {check.stderr.strip()}")
        p = PROCS.spawn(cmd, cpus=self.gw_cpus, stdout=subprocess.DEVNULL,
                        stderr=open(self.tmp / f"nginx-{tag}.log", "w"))
        wait_port(port, p)
        return Target("nginx", f"http://127.0.0.1:{port}", p,
                      tls_base=f"https://127.0.0.1:{tls_port}")

    def sira_env(self, port, admin, tls_port):
        env = dict(os.environ)
        env.update(BENCH_LISTEN=f"127.0.0.1:{port}", BENCH_ADMIN=f"127.0.0.1:{admin}",
                   BENCH_TLS_LISTEN=f"127.0.0.1:{tls_port}", BENCH_TLS_CERT=self.cert,
                   BENCH_TLS_KEY=self.key,
                   BENCH_UPSTREAM=f"http://{self.mock_addr}", BENCH_TMP=str(self.tmp),
                   SIRA_UPGRADE_SOCK=str(self.tmp / "sira-upgrade.sock"))
        env.pop("RUST_LOG", None)
        return env

    def start_sira(self, tag):
        port, admin, tls_port = free_port(), free_port(), free_port()
        # A copy: scenario (f) edits it between reloads.
        conf = self.tmp / "sira.yaml"
        shutil.copy(BENCH / "sira.yaml", conf)
        p = PROCS.spawn([str(self.bin / "sira"), "run", "-c", str(conf)], cpus=self.gw_cpus,
                        env=self.sira_env(port, admin, tls_port), stdout=subprocess.DEVNULL,
                        stderr=open(self.tmp / f"sira-{tag}.log", "w"))
        wait_port(port, p)
        wait_port(tls_port, p)
        return Target("sira", f"http://127.0.0.1:{port}", p, admin=f"http://127.0.0.1:{admin}",
                      tls_base=f"https://127.0.0.1:{tls_port}")

    def stop(self, t):
        if t.proc is None:
            return
        if t.proc.poll() is not None:
            raise BenchError(f"{t.name} died during the scenario (exit {t.proc.returncode})")
        # SIGINT is a fast shutdown for both Pingora and nginx: nothing is in flight here.
        PROCS.stop(t.proc, sig=signal.SIGINT)

    # -- load generators --

    def taskset(self, cmd):
        return (["taskset", "-c", self.load_cpus] if self.load_cpus else []) + cmd

    def wrk(self, url, req, conns, seconds, delay_ms=0):
        out = self.path("wrk.json")
        env = dict(os.environ, BENCH_BODY=req.body_file, BENCH_KEY=req.key,
                   BENCH_HEADERS="\n".join(req.headers), BENCH_DELAY_MS=str(delay_ms),
                   BENCH_OUT=out)
        cmd = self.taskset(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s",
                            "-s", str(BENCH / "wrk.lua"), url])
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
        if r.returncode != 0 or not os.path.exists(out):
            raise BenchError(f"wrk failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        with open(out) as f:
            w = json.load(f)
        e = w["errors"]
        return {
            "requests": w["requests"] - e["status"],
            "rps": w["requests"] / (w["duration_us"] / 1e6),
            "p50_ms": w["latency_us"]["p50"] / 1e3,
            "p99_ms": w["latency_us"]["p99"] / 1e3,
            "p999_ms": w["latency_us"]["p999"] / 1e3,
            "errors": sum(e.values()),
            "error_detail": {k: v for k, v in e.items() if v},
        }

    def oha_flavour(self):
        if self.oha_json is None:
            help_text = subprocess.run([self.oha, "--help"], capture_output=True,
                                       text=True).stdout
            self.oha_json = (["--output-format", "json"] if "--output-format" in help_text
                             else ["-j"])
        return self.oha_json

    def fixed_rate(self, url, req, rate, seconds):
        """Latency at a fixed request rate: oha when installed, else wrk paced by delay()."""
        if self.oha:
            hdrs = ["-H", "Content-Type: application/json"]
            if req.key:
                hdrs += ["-H", f"Authorization: Bearer {req.key}"]
            for h in req.headers:
                hdrs += ["-H", h]
            cmd = self.taskset([self.oha, "-z", f"{seconds}s", "-q", str(rate), "-c", "4",
                                "--no-tui", *self.oha_flavour(), "-m", "POST",
                                "-D", req.body_file, *hdrs, url])
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
            if r.returncode != 0:
                raise BenchError(f"oha failed ({r.returncode}): {r.stderr.strip()[-500:]}")
            o = json.loads(r.stdout)
            codes = o.get("statusCodeDistribution", {})
            ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
            # Requests still in flight when -z runs out are "aborted due to deadline": the end
            # of the run, not failures.
            bad = sum(codes.values()) - ok + sum(
                v for k, v in o.get("errorDistribution", {}).items() if "deadline" not in k)
            lat = o["latencyPercentiles"]
            return {"tool": "oha", "rps": o["summary"]["requestsPerSec"],
                    "p50_ms": lat["p50"] * 1e3, "p99_ms": lat["p99"] * 1e3, "errors": bad}
        # 4 connections, each waiting 20 ms after every answer: ~200 req/s, and since a
        # request takes well under a millisecond the pacing hardly drifts.
        conns = 4
        r = self.wrk(url, req, conns, seconds, delay_ms=max(1, int(conns * 1000 / rate)))
        r["tool"] = "wrk (paced)"
        return r


class Req:
    """One request shape: body file, path, headers (the key is only sent to sira)."""

    def __init__(self, env, name, path, body, headers=(), key=None, expect="", shape=""):
        self.path = path
        # Text the answer must contain: proves it is in the client's format (translated).
        self.shape = shape
        self.body_file = env.path(name + ".json")
        with open(self.body_file, "wb") as f:
            f.write(body if isinstance(body, bytes) else json.dumps(body).encode())
        self.headers = list(headers)
        self.key = key or ""
        self.expect = expect


# --- request shapes ----------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello! What is the capital of France?"}]


def chat_req(env, tname, model="gpt-4o", stream=False, headers=(), content=None, name="chat",
             key=KEY):
    body = {"model": model, "messages": MESSAGES, "max_tokens": 256}
    if content is not None:
        body["messages"] = [{"role": "user", "content": content}]
    if stream:
        # Asking for usage ourselves keeps the upstream stream identical on every target
        # (otherwise sira alone would add include_usage and get one more event).
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return Req(env, name, "/v1/chat/completions", body, headers,
               key=key if tname == "sira" else None, expect="[DONE]" if stream else "",
               shape="chat.completion.chunk" if stream else '"chat.completion"')


def anthropic_req(env, stream=False, headers=()):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 256, "system": MESSAGES[0]["content"],
            "messages": [MESSAGES[1]]}
    if stream:
        body["stream"] = True
    return Req(env, "anthropic", "/v1/messages", body,
               ["anthropic-version: 2023-06-01", *headers],
               expect="message_stop" if stream else "",
               shape="content_block_delta" if stream else '"type":"message"')


def translated_req(env, tname, stream, headers=()):
    """(b)/(d): sira gets the OpenAI request for an Anthropic-served model and translates;
    direct and nginx can only pass the Anthropic request through (the same upstream work)."""
    if tname == "sira":
        return chat_req(env, tname, model="claude-bench", stream=stream, headers=headers)
    return anthropic_req(env, stream, headers)


# --- scenarios ---------------------------------------------------------------------------

def check_one(t, req):
    """One request, checked, before any timing: a harness that measures 404s is useless."""
    hdrs = {"Content-Type": "application/json"}
    if req.key:
        hdrs["Authorization"] = f"Bearer {req.key}"
    for h in req.headers:
        k, _, v = h.partition(":")
        hdrs[k.strip()] = v.strip()
    with open(req.body_file, "rb") as f:
        status, body, _ = http("POST", t.base + req.path, f.read(), hdrs)
    if status != 200:
        raise BenchError(f"{t.name} {req.path}: status {status}: {body[:300]!r}")
    if req.expect and req.expect.encode() not in body[-400:]:
        raise BenchError(f"{t.name} {req.path}: response does not end with {req.expect!r}: "
                         f"{body[-200:]!r}")
    if req.shape and req.shape.encode() not in body:
        raise BenchError(f"{t.name} {req.path}: answer is not in the client's format (no "
                         f"{req.shape!r}): {body[:200]!r}")
    return body


def sira_tokens(t):
    """Output tokens sira accounted so far (its Prometheus counter)."""
    status, body, _ = http("GET", t.admin + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("sira_tokens_total{") and 'kind="output"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def measured(env, t, fn):
    """Runs `fn` and adds the gateway's CPU per request and peak RSS to its result."""
    before = cpu_ticks(t.root) if t.root else 0
    r = fn()
    if t.root:
        ticks = cpu_ticks(t.root) - before
        n = r.get("requests") or 0
        r["cpu_us"] = ticks * 1e6 / CLK_TCK / n if n else None
        r["rss_mb"] = mem_kb(t.root, "VmHWM") / 1024
    return r


def warm(env, t, req, conns):
    if env.args.s["warm_s"]:
        env.wrk(t.base + req.path, req, conns, env.args.s["warm_s"])


def run_load(env, t, req, conns, seconds, label):
    check_one(t, req)
    warm(env, t, req, conns)
    tokens_before = sira_tokens(t) if t.name == "sira" else 0
    r = measured(env, t, lambda: env.wrk(t.base + req.path, req, conns, seconds))
    if t.name == "sira" and r["requests"] and sira_tokens(t) <= tokens_before:
        raise BenchError(f"{label}: sira counted no tokens (accounting is not running)")
    return r


def scenario_a(env, t):
    s = env.args.s
    req = chat_req(env, t.name)
    r = run_load(env, t, req, s["conns"], s["load_s"], "(a)")
    fr = env.fixed_rate(t.base + req.path, req, s["rate"], s["rate_s"])
    r["fixed"] = fr
    r["errors"] += fr["errors"]
    return r


def translation_available(env, t, stream):
    req = translated_req(env, "sira", stream)
    with open(req.body_file, "rb") as f:
        status, body, _ = http("POST", t.base + req.path, f.read(),
                               {"Content-Type": "application/json",
                                "Authorization": f"Bearer {KEY}"})
    if status == 200:
        return True
    if status == 400 and b"translat" in body:
        return False
    raise BenchError(f"probe of the translated route: status {status}: {body[:300]!r}")


def scenario_b(env, t):
    req = translated_req(env, t.name, stream=False)
    return run_load(env, t, req, env.args.s["conns"], env.args.s["load_s"], "(b)")


def stream_scenario(env, t, req, label):
    s = env.args.s
    r = run_load(env, t, req, s["stream_conns"], s["load_s"], label)
    # Unloaded timing of sequential streams on one keep-alive connection.
    out = run_client(env, "probe", t, req, ["-n", str(s["probe_n"]), "--warmup", "5"])
    r["probe"] = out
    r["errors"] += out["errors"]
    return r


def scenario_c(env, t):
    # 96 content events + role, finish, usage and [DONE]: 100 events.
    req = chat_req(env, t.name, stream=True, headers=["x-mock-events: 96"], name="stream")
    return stream_scenario(env, t, req, "(c)")


def scenario_d(env, t):
    # Anthropic: message_start, content_block_start, ping, 94 deltas, content_block_stop,
    # message_delta, message_stop: 100 events.
    req = translated_req(env, t.name, stream=True, headers=["x-mock-events: 94"])
    return stream_scenario(env, t, req, "(d)")


def run_client(env, mode, t, req, extra, on_line=None, deadline=300):
    cmd = env.taskset([sys.executable, str(BENCH / "sse_client.py"), mode,
                       "--url", t.base + req.path, "--body", req.body_file,
                       "--expect", req.expect, *extra])
    for h in req.headers + ([f"Authorization: Bearer {req.key}"] if req.key else []):
        cmd += ["--header", h]
    # stderr to a file: ten thousand streams failing at once can write more than a pipe
    # holds, and a client blocked on a full pipe would wait forever.
    errfile = env.path(f"client-{mode}.err")
    p = PROCS.spawn(cmd, stdout=subprocess.PIPE, stderr=open(errfile, "w"), text=True)
    # A wedged target must not wedge the whole run.
    watchdog = threading.Timer(deadline, lambda: PROCS.stop(p, sig=signal.SIGKILL))
    watchdog.daemon = True  # must not keep an interrupted harness alive
    watchdog.start()
    last = ""
    for line in p.stdout:
        line = line.strip()
        if line.startswith("ALL_OPEN") and on_line:
            on_line(line)
        elif line:
            last = line
    p.wait()
    err = Path(errfile).read_text()
    watchdog.cancel()
    PROCS.stop(p)
    if p.returncode != 0 or not last.startswith("{"):
        raise BenchError(f"sse_client {mode} failed: {err.strip()[-500:]}")
    return json.loads(last)


def scenario_e(env, t):
    s = env.args.s
    n = env.args.hold_n
    req = chat_req(env, t.name, stream=True, name="slow",
                   headers=[f"x-mock-events: {s['hold_events']}",
                            f"x-mock-delay-ms: {s['hold_delay_ms']}"])
    check_one(t, chat_req(env, t.name))
    r = {}
    if t.root:
        r["idle_rss_mb"] = mem_kb(t.root, "VmRSS") / 1024
    sample = {}

    def at_all_open(line):
        sample["open"] = int(line.split()[1])
        if t.root:
            sample["rss_kb"] = mem_kb(t.root, "VmRSS")
            sample["fds"] = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in proc_tree(t.root))
        if t.name == "sira":
            _, body, _ = http("GET", t.admin + "/metrics")
            m = re.search(r"^sira_active_streams (\d+)", body.decode(), re.M)
            sample["active"] = int(m.group(1)) if m else None

    before = cpu_ticks(t.root) if t.root else 0
    # Per-operation timeout above the gap between events; the whole run is bounded too.
    gap_s = s["hold_delay_ms"] / 1000
    out = run_client(env, "hold", t, req,
                     ["-n", str(n), "--timeout", str(gap_s + 20), "--settle", "1"], at_all_open,
                     deadline=60 + 6 * gap_s * (s["hold_events"] + 4))
    r.update(requests=out["ok"], errors=out["errors"], hold=out,
             p50_ms=out["ttfb_us"]["p50"] / 1e3 if out["ttfb_us"]["n"] else None,
             p99_ms=out["ttfb_us"]["p99"] / 1e3 if out["ttfb_us"]["n"] else None,
             p999_ms=out["ttfb_us"]["p999"] / 1e3 if out["ttfb_us"]["n"] else None)
    if t.root:
        r["cpu_us"] = (cpu_ticks(t.root) - before) * 1e6 / CLK_TCK / max(1, out["ok"])
        r["rss_mb"] = mem_kb(t.root, "VmHWM") / 1024
        if "rss_kb" in sample:
            r["open_rss_mb"] = sample["rss_kb"] / 1024
            r["per_stream_kb"] = ((sample["rss_kb"] - r["idle_rss_mb"] * 1024)
                                  / max(1, sample["open"]))
    r["open_at_sample"] = sample.get("open")
    r["fds_at_sample"] = sample.get("fds")
    if "active" in sample:
        r["active_streams"] = sample["active"]
    return r


def scenario_f(env, t):
    """Reload every second under load. sira: edit the file, then POST /admin/reload (whose
    answer says whether the new config was taken); nginx: SIGHUP to the master (new
    workers, old ones finish gracefully)."""
    s = env.args.s
    req = chat_req(env, t.name)
    check_one(t, req)
    warm(env, t, req, s["conns"])
    stop = threading.Event()
    state = {"reloads": 0, "failed": 0}
    conf = env.tmp / "sira.yaml"

    def reloader():
        flip = False
        while not stop.wait(1.0):
            if t.name == "sira":
                flip = not flip
                text = conf.read_text()
                text = re.sub(r"input: 2\.5\d", "input: 2.51" if flip else "input: 2.50", text,
                              count=1)
                conf.write_text(text)
                status, body, _ = http("POST", t.admin + "/admin/reload", b"")
                ok = status == 200 and b'"ok"' in body
            else:
                os.kill(t.root, signal.SIGHUP)
                ok = True
            state["reloads"] += 1
            state["failed"] += 0 if ok else 1

    th = threading.Thread(target=reloader, daemon=True)
    th.start()
    try:
        r = measured(env, t, lambda: env.wrk(t.base + req.path, req, s["conns"], s["reload_s"]))
    finally:
        stop.set()
        th.join()
    r.update(reloads=state["reloads"], reload_failures=state["failed"])
    r["errors"] += state["failed"]
    return r


def scenario_g(env, t):
    s = env.args.s
    # ~1 MB of prompt text (JSON-safe ASCII), as an agent sending a large context would.
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
             "incididunt ut labore et dolore magna aliqua ")
    content = (words * (1_000_000 // len(words) + 1))[:1_000_000]
    req = chat_req(env, t.name, content=content, name="big")
    return run_load(env, t, req, s["big_conns"], s["big_s"], "(g)")


def scenario_h(env, t):
    """(a)'s request to a three-endpoint pool with consistent hashing on a header: the cost
    of choosing an endpoint is (h) − (a). One session id for every request, so under load
    its endpoint fills up to the bound and the rest spill along the ring: the dearer path
    of the selection, not the cheapest."""
    s = env.args.s
    req = chat_req(env, t.name, model="gpt-4o-pool", headers=["x-session-id: bench-session"],
                   name="pool")
    return run_load(env, t, req, s["conns"], s["load_s"], "(h)")


def bench_jwt():
    """An HS256 token of bench/sira.yaml's issuer, valid for the run."""
    import base64
    import hashlib
    import hmac
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": "https://bench.sira", "aud": "sira", "sub": "bench",
                             "exp": int(time.time()) + 3 * 3600}).encode())
    signed = f"{header}.{claims}".encode()
    mac = hmac.new(b"bench-jwt-secret-of-at-least-32-bytes!!", signed, hashlib.sha256)
    return f"{header}.{claims}.{b64(mac.digest())}"


def scenario_i(env, t):
    """(a) by a key with limits and a budget, in a tenant with its own: admission, reserve
    and settle in two scopes. The cost of limits is (i) − (a)."""
    s = env.args.s
    req = chat_req(env, t.name, name="limited", key="sk-sira-bench-limited")
    return run_load(env, t, req, s["conns"], s["load_s"], "(i)")


def scenario_j(env, t):
    """(a) with a JWT instead of an API key. The cost of JWT auth is (j) − (a)."""
    s = env.args.s
    req = chat_req(env, t.name, name="jwt", key=bench_jwt())
    return run_load(env, t, req, s["conns"], s["load_s"], "(j)")


def scenario_k(env, t):
    """(a) over TLS on kept-alive connections (ECDSA P-256, the client's choice of TLS 1.3
    suite): the cost of terminating TLS is (k) − (a)."""
    s = env.args.s
    tls = Target(t.name, t.tls_base, t.proc, t.admin)
    req = chat_req(env, t.name)
    return run_load(env, tls, req, s["conns"], s["load_s"], "(k)")


def scenario_l(env, t):
    """(k) with `Connection: close`: a TCP connection and a full TLS handshake (ECDSA P-256,
    no resumption) per request. The cost of a handshake is (l) − (k)."""
    s = env.args.s
    tls = Target(t.name, t.tls_base, t.proc, t.admin)
    req = chat_req(env, t.name, headers=["Connection: close"], name="handshake")
    return run_load(env, tls, req, s["conns"], s["load_s"], "(l)")


def scenario_q(env, t):
    """Resumed TLS handshakes per second: `openssl s_time -reuse` opens a connection per
    request, resuming the first one's session, and asks for a path both gateways answer
    locally (sira's 404, nginx's `return 404`). CPU per connection is read as for a
    request."""
    s = env.args.s
    host_port = t.tls_base.split("://", 1)[1]
    seconds = max(2, int(s["load_s"]))

    def run():
        cmd = env.taskset(["openssl", "s_time", "-connect", host_port, "-reuse",
                           "-www", "/tls-probe", "-time", str(seconds)])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        # "N connections in T real seconds": the first summary line's seconds are the
        # client's own CPU time, not the wall clock.
        m = re.search(r"(\d+) connections in (\d+) real seconds", r.stdout)
        if not m:
            raise BenchError(f"openssl s_time: {(r.stdout + r.stderr)[-400:]}")
        n, elapsed = int(m.group(1)), float(m.group(2))
        # One mark per connection: `r` resumed, `*` a full handshake. A target that does
        # not resume would be measured doing full handshakes: refuse the figure.
        marks = "".join(re.findall(r"^[r*]+$", r.stdout, re.M))
        resumed = marks.count("r")
        if marks and resumed < 0.9 * len(marks):
            raise BenchError(f"(q): only {resumed} of {len(marks)} handshakes resumed")
        return {"requests": n, "rps": n / max(elapsed, 1e-9), "errors": 0,
                "resumed": resumed, "p50_ms": None, "p99_ms": None, "p999_ms": None}

    return measured(env, t, run)


def scenario_r(env, t):
    """(c)'s 100-event SSE stream over TLS on kept-alive connections: the cost of
    encrypting a stream event by event is (r) − (c)."""
    s = env.args.s
    tls = Target(t.name, t.tls_base, t.proc, t.admin)
    req = chat_req(env, t.name, stream=True, headers=["x-mock-events: 96"], name="stream-tls")
    return run_load(env, tls, req, s["stream_conns"], s["load_s"], "(r)")


def scenario_s(env, t):
    """HTTP/2 over TLS: one connection carrying 100 concurrent streams of (a)'s request
    (h2load -c1 -m100), 100,000 requests (2,000 in a smoke run)."""
    s = env.args.s
    req = chat_req(env, t.name, name="h2")
    check_one(t, req)
    # CPU time is read in clock ticks (10 ms): 100,000 requests (3-4 s on one core) make
    # the figure good to a few tenths of a microsecond, where 2,000 read in steps of 5 µs.
    total = 2000 if env.args.smoke else 100000

    def run():
        headers = ["content-type: application/json", *req.headers]
        if req.key:
            headers.append(f"authorization: Bearer {req.key}")
        cmd = env.taskset(["h2load", "-c1", "-m100", "-n", str(total), "-d", req.body_file,
                           *sum((["-H", h] for h in headers), []), t.tls_base + req.path])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                         r"(\d+) failed, (\d+) errored", r.stdout)
        rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", r.stdout)
        proto = re.search(r"Application protocol: (\S+)", r.stdout)
        if not done or not proto or proto.group(1) != "h2":
            raise BenchError(f"h2load: {(r.stdout + r.stderr)[-500:]}")
        ok, failed, errored = int(done.group(2)), int(done.group(3)), int(done.group(4))
        return {"requests": ok, "rps": float(rate.group(1)) if rate else None,
                "errors": failed + errored, "p50_ms": None, "p99_ms": None, "p999_ms": None}

    return measured(env, t, run)


# The prompt of (m) and (n): personal data the redact filter replaces with placeholders.
PII_PROMPT = ("Hello! Write to jane.doe@example.com or call +1 415 555 0100 about card "
              "4111 1111 1111 1111. What is the capital of France?")


def scenario_m(env, t):
    """(a) to a model with `redact` on request and response: the prompt's email, phone and
    card become placeholders, the answer is parsed for values and placeholders. The cost of
    redaction is (m) − (a)."""
    s = env.args.s
    req = chat_req(env, t.name, model="gpt-4o-redact", content=PII_PROMPT, name="redact")
    return run_load(env, t, req, s["conns"], s["load_s"], "(m)")


def scenario_n(env, t):
    """(c) to the same model: every one of the 100 events is followed for values split
    across events. The cost is (n) − (c)."""
    req = chat_req(env, t.name, model="gpt-4o-redact", stream=True, content=PII_PROMPT,
                   headers=["x-mock-events: 96"], name="redact-stream")
    return stream_scenario(env, t, req, "(n)")


def cache_load(env, t, req, conns, label):
    """A load whose every request after the first is a cache hit: no upstream work, so
    sira counts no new tokens and the accounting check of `run_load` does not apply."""
    s = env.args.s
    check_one(t, req)
    body = check_one(t, req)
    warm(env, t, req, conns)
    r = measured(env, t, lambda: env.wrk(t.base + req.path, req, conns, s["load_s"]))
    r["check"] = len(body)
    return r


def scenario_o(env, t):
    """(a)'s request answered from the response cache: the cost of a hit against a
    passthrough request is (o) against (a)."""
    req = chat_req(env, t.name, model="gpt-4o-cached", name="cached")
    return cache_load(env, t, req, env.args.s["conns"], "(o)")


def scenario_p(env, t):
    """(c)'s stream replayed from the response cache: (p) against (c)."""
    req = chat_req(env, t.name, model="gpt-4o-cached", stream=True,
                   headers=["x-mock-events: 96"], name="cached-stream")
    return cache_load(env, t, req, env.args.s["stream_conns"], "(p)")


SCENARIOS = [
    ("a", "small chat JSON, key auth + accounting", scenario_a, PASSTHROUGH),
    ("b", "small chat JSON, translated OpenAI→Anthropic", scenario_b, TARGETS),
    ("c", "100-event SSE stream", scenario_c, PASSTHROUGH),
    ("d", "100-event SSE stream, translated", scenario_d, TARGETS),
    # Not direct: (e) is about the gateway's memory per stream, and the client's ramp alone
    # takes as long as a gateway's run.
    ("e", "10,000 open slow streams", scenario_e, ["nginx", "sira"]),
    ("f", "config reload every second under load", scenario_f, ["nginx", "sira"]),
    ("g", "1 MB request bodies", scenario_g, PASSTHROUGH),
    # Only sira pools endpoints this way; its figure is read against its own (a).
    ("h", "small chat JSON to a 3-endpoint pool, consistent hash on a header", scenario_h,
     ["sira"]),
    ("i", "small chat JSON by a key with limits and a budget, in a tenant with its own",
     scenario_i, ["sira"]),
    ("j", "small chat JSON with a JWT bearer token", scenario_j, ["sira"]),
    ("k", "small chat JSON over TLS (kept-alive connections)", scenario_k, ["nginx", "sira"]),
    ("l", "small chat JSON over TLS, a new connection and handshake each", scenario_l,
     ["nginx", "sira"]),
    ("m", "small chat JSON, redact on request and response", scenario_m, ["sira"]),
    ("n", "100-event SSE stream, redact on every event", scenario_n, ["sira"]),
    ("o", "small chat JSON, response cache hit", scenario_o, ["sira"]),
    ("p", "100-event SSE stream, response cache hit", scenario_p, ["sira"]),
    ("q", "resumed TLS handshakes, a connection each", scenario_q, ["nginx", "sira"]),
    ("r", "100-event SSE stream over TLS (kept-alive connections)", scenario_r,
     ["nginx", "sira"]),
    ("s", "HTTP/2 over TLS, 100 concurrent streams on one connection", scenario_s,
     ["nginx", "sira"]),
]


def callgrind(env, smoke):
    """Instructions per request (a) and per 100-event stream (c passthrough, d translated)
    under callgrind: the one figure that does not drift with the neighbours' load, for
    before/after comparisons."""
    out = {}
    # Valgrind's start and the annotation take most of the time; the counts per request are
    # the same from a few hundred requests on (±0.3 %).
    for key, n in (("a", 50 if smoke else 300), ("p", 50 if smoke else 300),
                   ("c", 5 if smoke else 30), ("d", 5 if smoke else 30)):
        r = subprocess.run(["bash", str(BENCH / "profile.sh"), key, str(n)], capture_output=True,
                           text=True, timeout=600, cwd=ROOT,
                           env=dict(os.environ, SIRA_BIN_DIR=str(env.bin)))
        m = re.search(r"instructions per request: (\d+)", r.stdout)
        prof = re.search(r"^profile: (\S+)", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise BenchError(f"profile.sh {key} failed: {(r.stdout + r.stderr).strip()[-400:]}")
        top = []
        incl = Path(prof.group(1)).parent / "inclusive.txt" if prof else None
        if incl and incl.exists():
            # One function shows up under several file names (its own, and the files of
            # code inlined into it): keep its largest inclusive figure.
            best = {}
            for line in incl.read_text().splitlines():
                hit = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", line)
                if not hit:
                    continue
                fn = re.sub(r"( \([\d,]+x\))? ?(\[[^\]]*\])?$", "", hit.group(2))
                fn = fn.split(".rs:", 1)[-1]
                if not fn.startswith("sira::") or "process_new" in fn:
                    continue
                best[fn] = max(best.get(fn, 0), int(hit.group(1).replace(",", "")) // n)
            top = sorted(best.items(), key=lambda kv: -kv[1])[:12]
            shutil.rmtree(Path(prof.group(1)).parent, ignore_errors=True)
        out[key] = {"n": n, "instr": int(m.group(1)), "top": top}
    return out


# --- report ------------------------------------------------------------------------------

def fmt(v, digits=2, unit=""):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    if abs(v) >= 100:
        return f"{v:.0f}{unit}"
    return f"{v:.{digits}f}{unit}"


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def fmt_ratio(v):
    return "—" if v is None else f"{v:.2f}×"


COLS = [("req/s", "rps"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("p99.9 ms", "p999_ms"),
        ("CPU µs/req", "cpu_us"), ("peak RSS MB", "rss_mb")]


def main_table(results, scenario_names):
    lines = ["| scenario | target | " + " | ".join(c for c, _ in COLS) + " | errors |",
             "|---|---|" + "---:|" * (len(COLS) + 1)]
    for key, title in scenario_names:
        res = results.get(key, {})
        label = f"({key}) {title}"
        if "unavailable" in res:
            lines.append(f"| {label} | all | " + " | ".join("—" for _ in COLS)
                         + f" | {res['unavailable']} |")
            continue
        first = True
        for tname in ALL_TARGETS:
            r = res.get(tname)
            if r is None:
                continue
            if "error" in r:
                cells = ["—"] * len(COLS) + [f"FAILED: {r['error'][:80]}"]
            else:
                cells = [fmt(r.get(k)) for _, k in COLS]
                cells.append(str(r.get("errors", 0)))
            lines.append(f"| {label if first else ''} | {tname} | " + " | ".join(cells) + " |")
            first = False
        sira = res.get("sira", {})
        for other in ("direct", "nginx", FLOOR):
            o = res.get(other)
            if o is None or "error" in o or "error" in sira or not sira:
                continue
            cells = [fmt_ratio(ratio(sira.get(k), o.get(k))) for _, k in COLS]
            lines.append(f"| | *sira ÷ {other}* | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def get(results, key, tname, *path):
    v = results.get(key, {}).get(tname)
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v


def details_table(results):
    rows = []

    def row(label, values, unit_digits=3):
        d, n, s = values
        rows.append(f"| {label} | {fmt(d, unit_digits)} | {fmt(n, unit_digits)} | "
                    f"{fmt(s, unit_digits)} | "
                    f"{fmt(None if s is None or d is None else s - d, unit_digits)} | "
                    f"{fmt(None if s is None or n is None else s - n, unit_digits)} |")

    tool = get(results, "a", "sira", "fixed", "tool") or get(results, "a", "direct", "fixed",
                                                              "tool")
    if "a" in results:
        rate = results.get("_rate")
        row(f"(a) p50 ms at {rate} req/s ({tool})",
            [get(results, "a", t, "fixed", "p50_ms") for t in TARGETS])
        row(f"(a) p99 ms at {rate} req/s ({tool})",
            [get(results, "a", t, "fixed", "p99_ms") for t in TARGETS])
    for key in ("c", "d"):
        if key in results and "unavailable" not in results[key]:
            for what, name in (("ttfb_us", "time to first event"), ("ttlb_us", "time to last byte")):
                for p in ("p50", "p99"):
                    vals = [get(results, key, t, "probe", what, p) for t in TARGETS]
                    row(f"({key}) {name} {p} ms, sequential streams on one keep-alive conn",
                        [None if v is None else v / 1e3 for v in vals])
            v = get(results, key, "sira", "probe", "sira_overhead_us", "p50")
            if v is not None:
                row(f"({key}) sira's own x-sira-overhead-us header, p50 ms", [None, None, v / 1e3])
    if "e" in results:
        row("(e) idle RSS MB", [get(results, "e", t, "idle_rss_mb") for t in TARGETS], 1)
        row("(e) RSS with all streams open MB",
            [get(results, "e", t, "open_rss_mb") for t in TARGETS], 1)
        row("(e) RSS per open stream KB", [get(results, "e", t, "per_stream_kb") for t in TARGETS],
            1)
        row("(e) streams open when RSS was sampled",
            [get(results, "e", t, "open_at_sample") for t in TARGETS], 0)
        row("(e) streams completed", [get(results, "e", t, "requests") for t in TARGETS], 0)
        row("(e) seconds to open them all",
            [get(results, "e", t, "hold", "open_seconds") for t in TARGETS], 1)
    if "f" in results:
        row("(f) reloads done", [get(results, "f", t, "reloads") for t in TARGETS], 0)
        row("(f) failed requests + failed reloads",
            [get(results, "f", t, "errors") for t in TARGETS], 0)
    head = ["| figure | direct | nginx | sira | sira − direct | sira − nginx |",
            "|---|---:|---:|---:|---:|---:|"]
    return "\n".join(head + rows)


def overhead(results, base, scenario, budget):
    """What `scenario` adds to `base` for sira, as a share: (measured, ok). With several
    rounds it is the mean of each round's own ratio, the two scenarios having run within the
    same round, minutes apart at most (the medians of each, shown too, drift apart with the
    machine's hour), with its standard error; the budget is met when the mean is within it.
    Rounds are paired by their order, so both lists must hold every round."""
    b, s = get(results, base, "sira", "cpu_us"), get(results, scenario, "sira", "cpu_us")
    if b is None or s is None:
        return None, None
    medians = f"{(s / b - 1) * 100:+.1f} %"
    rb = get(results, base, "sira", "rounds_cpu_us")
    rs = get(results, scenario, "sira", "rounds_cpu_us")
    if not rb or not rs or len(rb) != len(rs) or len(rb) < 3 or min(rb) <= 0:
        return medians, s <= b * (1 + budget)
    ratios = [y / x - 1 for x, y in zip(rb, rs)]
    mean = statistics.mean(ratios)
    error = statistics.stdev(ratios) / len(ratios) ** 0.5
    return (f"{mean * 100:+.1f} % ± {error * 100:.1f} (paired over {len(ratios)} rounds;"
            f" medians {medians})", mean <= budget)


def verdicts(results, smoke):
    """The issue's targets: (label, threshold, measured, ok or None when not measurable)."""
    out = []

    def add(label, threshold, measured, ok):
        out.append((label, threshold, measured, ok))

    a_s, a_n = results.get("a", {}).get("sira", {}), results.get("a", {}).get("nginx", {})
    cpu_ratio = ratio(a_s.get("cpu_us"), a_n.get("cpu_us"))
    add("(a) CPU per request vs nginx", "≤ 1.00×", fmt_ratio(cpu_ratio),
        None if cpu_ratio is None else cpu_ratio <= 1.0)
    fs, fn = get(results, "a", "sira", "fixed", "p50_ms"), get(results, "a", "nginx", "fixed",
                                                                 "p50_ms")
    add(f"(a) p50 at {results.get('_rate')} req/s, sira − nginx", f"≤ {LATENCY_BUDGET_MS} ms",
        None if fs is None or fn is None else f"{fs - fn:+.3f} ms",
        None if fs is None or fn is None else fs - fn <= LATENCY_BUDGET_MS)
    c_s, c_n = results.get("c", {}).get("sira", {}), results.get("c", {}).get("nginx", {})
    cr = ratio(c_s.get("cpu_us"), c_n.get("cpu_us"))
    add("(c) CPU per stream vs nginx", "≤ 1.00×", fmt_ratio(cr), None if cr is None else cr <= 1.0)
    ts, td = get(results, "c", "sira", "probe", "ttfb_us", "p50"), get(
        results, "c", "direct", "probe", "ttfb_us", "p50")
    add("(c) median time-to-first-byte overhead (sira − direct)", f"≤ {TTFB_BUDGET_US} µs",
        None if ts is None or td is None else f"{ts - td:.0f} µs",
        None if ts is None or td is None else ts - td <= TTFB_BUDGET_US)
    ls, ld = get(results, "c", "sira", "probe", "ttlb_us", "p50"), get(
        results, "c", "direct", "probe", "ttlb_us", "p50")
    lp = get(results, "c", "sira", "probe", "ttlb_us", "p90")
    add("(c) no per-stream floor on keep-alive (median last-byte overhead; p90)",
        f"< {DELAYED_ACK_FLOOR_MS:.0f} ms (a Nagle stall adds ~40)",
        None if ls is None or ld is None else f"{(ls - ld) / 1e3:.3f} ms; p90 {lp / 1e3:.2f} ms",
        None if ls is None or ld is None else (ls - ld) / 1e3 < DELAYED_ACK_FLOOR_MS
        and lp / 1e3 < 40)
    ha, hh = get(results, "a", "sira", "cpu_us"), get(results, "h", "sira", "cpu_us")
    add("(h) pool selection CPU per request over one endpoint, (h) − (a)", "≤ 2 µs",
        None if ha is None or hh is None else f"{hh - ha:+.2f} µs",
        None if ha is None or hh is None else hh - ha <= 2.0)
    hi, hj = get(results, "i", "sira", "cpu_us"), get(results, "j", "sira", "cpu_us")
    add("(i) limits and budgets CPU per request, (i) − (a)", "≤ 3 µs",
        None if ha is None or hi is None else f"{hi - ha:+.2f} µs",
        None if ha is None or hi is None else hi - ha <= 3.0)
    add("(j) JWT auth CPU per request, (j) − (a)", "≤ 3 µs",
        None if ha is None or hj is None else f"{hj - ha:+.2f} µs",
        None if ha is None or hj is None else hj - ha <= 3.0)
    add("(m) redaction CPU per request over (a)", "≤ +10 %",
        *overhead(results, "a", "m", 0.10))
    hc = get(results, "c", "sira", "cpu_us")
    add("(n) redaction CPU per stream over (c)", "≤ +10 %",
        *overhead(results, "c", "n", 0.10))
    ho, hp = get(results, "o", "sira", "cpu_us"), get(results, "p", "sira", "cpu_us")
    add("(o) cache hit CPU per request vs (a) passthrough", "< (a)",
        None if ha is None or ho is None else f"{ho:.1f} µs vs {ha:.1f} µs",
        None if ha is None or ho is None else ho < ha)
    add("(p) cached stream CPU vs (c) passthrough", "< (c)",
        None if hc is None or hp is None else f"{hp:.1f} µs vs {hc:.1f} µs",
        None if hc is None or hp is None else hp < hc)
    idle = get(results, "e", "sira", "idle_rss_mb")
    add("(e) idle RSS", f"≤ {IDLE_RSS_MB} MB", fmt(idle, 1, " MB"),
        None if idle is None else idle <= IDLE_RSS_MB)
    per = get(results, "e", "sira", "per_stream_kb")
    add(f"(e) RSS per open stream ({results.get('_hold_n')} streams)", f"≤ {PER_STREAM_KB} KB",
        fmt(per, 1, " KB"), None if per is None else per <= PER_STREAM_KB)
    ee = get(results, "e", "sira", "errors")
    add("(e) stream errors", "0", fmt(ee, 0), None if ee is None else ee == 0)
    fe = get(results, "f", "sira", "errors")
    add("(f) failed requests during reloads", "0", fmt(fe, 0), None if fe is None else fe == 0)
    if smoke:
        # Too short and too small to judge performance; only correctness counts.
        out = [(l, t, m, ok if l.startswith(("(e) stream", "(f)")) else None)
               for l, t, m, ok in out]
    return out


def verdict_table(vs):
    lines = ["| target | threshold | measured | |", "|---|---|---|---|"]
    for label, threshold, measured, ok in vs:
        mark = "—" if ok is None else ("met" if ok else "**MISSED**")
        lines.append(f"| {label} | {threshold} | {measured or '—'} | {mark} |")
    return "\n".join(lines)


def tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def machine_info(env):
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    os_name = "?"
    try:
        os_name = re.search(r'PRETTY_NAME="([^"]+)"', open("/etc/os-release").read()).group(1)
    except (OSError, AttributeError):
        pass
    git, dirty = env.git
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{model}, {os.cpu_count()} cores, {mem / 1048576:.0f} GiB, "
                   f"{os_name}, Linux {platform.release()}",
        "pinning": (f"gateway on cpu {env.gw_cpus}; load generator + mock on cpu {env.load_cpus}"
                    if env.gw_cpus else "none (one CPU)"),
        "sira": tool_version([str(env.bin / "sira"), "version"]) + f" (git {git}"
                + (", src/ modified" if dirty else "") + ")",
        "nginx": tool_version([env.args.nginx, "-v"]),
        "wrk": tool_version(["wrk", "-v"]),
        "oha": tool_version([env.oha, "--version"]) if env.oha else
               "not installed: fixed-rate latency by wrk paced with delay()",
        "python": platform.python_version(),
    }


def callgrind_section(cg):
    if not cg:
        return []
    lines = ["## Instructions per request (callgrind)", "",
             "User-space instructions of the sira process (kernel time excluded) per request,"
             " counted by valgrind: repeatable to a fraction of a percent on a busy machine,"
             " so this is the figure to compare before and after a change"
             " (`bash bench/profile.sh a|c|d` for the full profile).", "",
             "| scenario | requests | instructions per request |", "|---|---:|---:|"]
    for key, label in (("a", "(a) small chat JSON"),
                       ("p", "(h) the same through a 3-endpoint consistent-hash pool"),
                       ("c", "(c) 100-event SSE stream"),
                       ("d", "(d) 100-event SSE stream, translated")):
        if key in cg:
            lines.append(f"| {label} | {cg[key]['n']} | {cg[key]['instr']:,} |")
    if "a" in cg and "p" in cg:
        lines.append(f"| pool selection, (h) − (a) | | {cg['p']['instr'] - cg['a']['instr']:+,} |")
    for key, label in (("a", "(a)"), ("c", "(c)"), ("d", "(d)")):
        if key in cg and cg[key]["top"]:
            lines += ["", f"Heaviest sira frames in {label}, inclusive instructions per"
                      f" {'request' if key == 'a' else 'stream'}:", "",
                      "| function | instructions |", "|---|---:|"]
            lines += [f"| `{fn}` | {per:,} |" for fn, per in cg[key]["top"]]
    return lines + [""]


def render(results, info, env, vs, elapsed, cg=None):
    s = env.args.s
    mode = "smoke run (seconds per scenario: figures are not meaningful)" if env.args.smoke \
        else "full run"
    names = [(k, t.replace("10,000", f"{env.args.hold_n:,}")) for k, t, _, _ in SCENARIOS
             if k in results]
    notes = [
        f"- Closed loop: wrk, 1 thread, {s['conns']} connections ({s['stream_conns']} for streams,"
        f" {s['big_conns']} for 1 MB bodies), {s['load_s']} s per run after {s['warm_s']} s of"
        " warm-up (a checked request first). p50/p99/p99.9 there are latencies at saturation (mostly queueing on the load"
        " core), requests/s is bounded by the load core; CPU µs/req is the ranking figure.",
        "- CPU µs/req = (utime+stime of the gateway process tree, reaped children included) ÷"
        " requests completed; peak RSS = VmHWM (nginx: master + worker). Each scenario starts"
        " a fresh gateway. direct has no gateway, hence —.",
        f"- (c)/(d): {s['probe_n']} streams one after another on one keep-alive connection, no"
        " other load, for first-event and last-byte times; the upstream stream is identical on"
        " every target (the client asks for usage itself).",
        f"- (e): {env.args.hold_n} streams opened at once (≤ 256 connects in flight), each of"
        f" {s['hold_events'] + 4} events (role, {s['hold_events']} content, finish, usage, [DONE])"
        f" {s['hold_delay_ms']} ms apart; RSS sampled when every stream has delivered its first"
        " event; per stream = (that − idle RSS) ÷ streams open at that moment; the latency"
        " columns are time to first event (mostly the ramp), CPU is per stream.",
        f"- (f): {s['reload_s']} s of (a)'s load; every second sira's config file is edited and"
        " reloaded with POST /admin/reload, nginx's master gets SIGHUP. nginx's failures there"
        " are keep-alive connections its retiring worker closes while the client sends on"
        " them: reported, not counted as a harness failure.",
        "- sira: bench/sira.yaml (1 worker thread, key auth, token accounting with prices,"
        " JSON access log to a file). nginx: bench/nginx.conf (1 worker, keep-alive both"
        " sides, proxy_buffering off, access log to a file, buffered: buffer=64k flush=1s, as"
        " sira's writer batches its lines).",
    ]
    rounds = {f"({k}) {t}": r["rounds_cpu_us"] for k, res in results.items()
              if isinstance(res, dict) for t, r in res.items()
              if isinstance(r, dict) and "rounds_cpu_us" in r}
    if rounds:
        notes.append(
            f"- {env.args.rounds} rounds, the scenarios interleaved; each row is the round with"
            " the median CPU µs/req; what one scenario adds to another ((m) to (a), (n) to (c))"
            " is the mean of each round's ratio, ± its standard error. Every round's CPU"
            " µs/req: "
            + "; ".join(f"{name} {', '.join(f'{v:.1f}' for v in cpus)}"
                        for name, cpus in rounds.items()) + ".")
    if any(FLOOR in r for r in results.values() if isinstance(r, dict)):
        notes.append(
            "- pingora (`--floor`; in the passthrough scenarios a, c, g): bench/pingora-floor,"
            " Pingora's own `ProxyHttp` with nothing added (no auth, accounting, log or header"
            " edits), same allocator and one worker thread like sira: the floor of any"
            " Pingora-based gateway, so that *sira ÷ pingora* is the cost of sira's own work.")
    if env.args.hold_n < 10000 and not env.args.smoke:
        notes.append(f"- (e) ran {env.args.hold_n:,} streams, not 10,000: the open-files limit"
                     f" here is {env.nofile:,} (hard limit, not raisable in this container), a"
                     " gateway needs two sockets per stream, and nginx closes new connections"
                     " once 15/16 of its worker_connections are in use. Raise `ulimit -Hn`"
                     " to 24k+ for the full 10,000.")
    if any(k in results and "unavailable" not in results[k] for k in ("b", "d")):
        notes.append("- (b)/(d): sira gets the OpenAI request for `claude-bench`, an Anthropic"
                     " model, and translates request, response and stream; direct and nginx"
                     " cannot translate, so they pass the equivalent Anthropic request through"
                     " (the same upstream work, 100 events in (d)).")
    for key in ("b", "d"):
        if "unavailable" in results.get(key, {}):
            notes.append(f"- ({key}) needs an Anthropic model routable from the OpenAI surface: "
                         "sira answered 400 (no translation in this build). The scenario runs as "
                         "soon as translation lands; direct and nginx will then pass the "
                         "equivalent Anthropic request through.")
    out = [
        "# sira benchmark results",
        "",
        f"Generated by `bash bench/run.sh{' --smoke' if env.args.smoke else ''}` — {mode},"
        f" {elapsed:.0f} s. Every ratio compares figures measured in this same run.",
        "",
        *[f"- **{k}**: {v}" for k, v in info.items()],
        "",
        main_table(results, names),
        "",
        "## Streaming, latency at a fixed rate, memory, reloads",
        "",
        details_table(results),
        "",
        "## Targets (issue: sira in nginx's class)",
        "",
        verdict_table(vs),
        "",
        *callgrind_section(cg),
        "## How it was measured",
        "",
        *notes,
        "",
    ]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description="sira benchmark harness (see bench/run.sh)")
    ap.add_argument("--smoke", action="store_true", help="seconds per scenario, for CI")
    ap.add_argument("--only", default="abcdefgh", help="scenario letters to run, e.g. ac")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the scenarios this many times, interleaved; each figure is then "
                         "the run with the median CPU per request (for ±10 %% comparisons "
                         "on a noisy machine)")
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                    help=f"comma-separated, of {','.join(ALL_TARGETS)}")
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--nofile", default=str(os.sysconf("SC_OPEN_MAX")))
    ap.add_argument("--out", default=None, help="report file (default: bench/RESULTS.md for a "
                                                "full run of every scenario, else a temp file)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--hold-n", type=int, default=None, help="(e): streams to hold open")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the callgrind instruction counts (needs valgrind)")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temporary directory (logs, configs, access logs)")
    args = ap.parse_args()
    args.s = dict(SMOKE if args.smoke else FULL)
    # Two sockets per proxied stream in the gateway. nginx starts closing connections that
    # have not sent their request yet once more than 15/16 of worker_connections (the
    # open-files limit) are in use, so stay under that line, with a little headroom.
    fit = int((int(args.nofile) - 32) * 15 / 16) // 2 - 50
    args.hold_n = min(args.hold_n or args.s["hold_n"], fit)
    return args


def main():
    args = parse_args()
    started = time.monotonic()
    # Stop everything we started whatever ends the run (Ctrl-C, SIGTERM, an exception).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="sira-bench-"))
    env = Env(args, tmp)
    results = {"_rate": args.s["rate"], "_hold_n": args.hold_n}
    failures = []
    wanted = set(args.targets.split(","))
    try:
        env.start_mock()
        runs = {}
        for key, title, fn, targets in [s for _ in range(args.rounds) for s in SCENARIOS]:
            if key not in args.only:
                continue
            log(f"({key}) {title}")
            res = results.setdefault(key, {})
            if key in ("b", "d"):
                probe_t = env.start("sira", f"{key}-probe")
                try:
                    available = translation_available(env, probe_t, stream=key == "d")
                finally:
                    env.stop(probe_t)
                if not available:
                    res["unavailable"] = "not available (translation not merged)"
                    log(f"({key}) skipped: {res['unavailable']}")
                    continue
            for tname in targets:
                if tname not in wanted:
                    continue
                t = None
                try:
                    t = env.start(tname, key)
                    r = fn(env, t)
                    env.stop(t)
                    t = None
                    res[tname] = r
                    runs.setdefault((key, tname), []).append(r)
                    log(f"   {tname:6} " + "  ".join(
                        f"{c}={fmt(r.get(k))}" for c, k in COLS if r.get(k) is not None)
                        + f"  errors={r.get('errors', 0)}")
                    # nginx dropping requests at reload is a finding about nginx, not a
                    # broken harness.
                    if r.get("errors") and not (key == "f" and tname == "nginx"):
                        failures.append(f"({key}) {tname}: {r['errors']} errors "
                                        f"{r.get('error_detail') or r.get('hold', {}).get('error_samples') or r.get('probe', {}).get('error_samples') or ''}")
                except (BenchError, subprocess.SubprocessError, OSError, KeyError, ValueError) as e:
                    res[tname] = {"error": str(e)}
                    failures.append(f"({key}) {tname}: {e}")
                    log(f"   {tname:6} FAILED: {e}")
                    if t is not None and t.proc is not None:
                        PROCS.stop(t.proc)
            if env.mock.poll() is not None:
                raise BenchError("the mock provider died")
        # Several rounds: the run with the median CPU stands for the scenario.
        for (key, tname), rs in runs.items():
            timed = [r for r in rs if r.get("cpu_us") is not None]
            # Only when every round ran: rounds are paired across scenarios by their order.
            if len(rs) > 1 and len(rs) == args.rounds and len(timed) == len(rs):
                timed.sort(key=lambda r: r["cpu_us"])
                median = dict(timed[len(timed) // 2])
                median["rounds_cpu_us"] = [round(r["cpu_us"], 2) for r in rs]
                results[key][tname] = median
        cg = None
        if not args.no_profile:
            if shutil.which("valgrind"):
                log("callgrind: instructions per request for (a), (c) and (d)")
                try:
                    cg = callgrind(env, args.smoke)
                    log("   " + "  ".join(f"({k}) {v['instr']:,}" for k, v in cg.items()))
                except (BenchError, subprocess.SubprocessError) as e:
                    failures.append(f"callgrind: {e}")
            else:
                log("valgrind not installed: no instruction counts")
    finally:
        PROCS.stop_all()
    elapsed = time.monotonic() - started
    info = machine_info(env)
    vs = verdicts(results, args.smoke)
    report = render(results, info, env, vs, elapsed, cg)
    if args.out:
        out = Path(args.out)
    elif (not args.smoke and args.only == "abcdefgh"
          and set(args.targets.split(",")) >= set(DEFAULT_TARGETS)):
        out = BENCH / "RESULTS.md"
    else:
        out = tmp / "RESULTS.md"
    # A hand-written log below the marker (before/after figures of optimisations) survives
    # regeneration.
    if out.exists() and KEEP_MARKER in out.read_text():
        report += "\n" + KEEP_MARKER + out.read_text().split(KEEP_MARKER, 1)[1]
    out.write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(report)
    if args.keep_tmp or failures:
        log(f"report written to {out}; logs in {tmp}")
    else:
        # Access logs of a full run weigh hundreds of MB: do not leave them in /tmp.
        for entry in tmp.iterdir():
            if entry != out:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if out.parent != tmp:
            tmp.rmdir()
        log(f"report written to {out}")
    if failures:
        log("FAILURES:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
