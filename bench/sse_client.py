#!/usr/bin/env python3
"""SSE clients for bench/bench.py (python3 stdlib only).

probe  N streams (or JSON answers) one after another on ONE keep-alive connection, timing
       each: time to the first body byte (the first event) and to the last byte. Sequential streams on a reused
       connection are where a missing TCP_NODELAY shows: Nagle holds the small last write
       until the client's delayed ACK, ~40 ms per stream.
hold   N streams open at once (slow events), to measure the gateway's memory per open
       stream. Prints "ALL_OPEN" once every stream has delivered its first event, so that
       the harness samples the gateway's RSS at that moment, then waits for every stream to
       end and counts the ones that failed.

Both print one JSON object (the last line of stdout). Requests are raw HTTP/1.1 so that
the client adds as little time of its own as possible and controls connection reuse.
"""

import argparse
import asyncio
import json
import socket
import sys
import time


def request_bytes(host, path, body, headers):
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Accept: text/event-stream",
    ]
    lines += headers
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_head(head):
    """Status code and lower-cased headers of a response head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


class Chunked:
    """Incremental decoder of a chunked body: feed bytes, read `done` and `body`."""

    def __init__(self):
        self.buf = b""
        self.body = bytearray()
        self.need = None  # bytes left in the current chunk (+2 for its CRLF)
        self.done = False

    def feed(self, data):
        self.buf += data
        while not self.done:
            if self.need is None:
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    return
                size = int(self.buf[:eol].split(b";")[0], 16)
                self.buf = self.buf[eol + 2:]
                if size == 0:
                    # Last chunk: wait for the CRLF that ends the (empty) trailer section.
                    self.need = -1
                else:
                    self.need = size + 2
            if self.need == -1:
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                self.buf = self.buf[end + 2:]
                self.done = True
                return
            if len(self.buf) < self.need:
                return
            self.body += self.buf[: self.need - 2]
            self.buf = self.buf[self.need:]
            self.need = None


class Sized:
    """The same interface as Chunked for a Content-Length body."""

    def __init__(self, length):
        self.buf = b""
        self.body = bytearray()
        self.left = length
        self.done = length == 0

    def feed(self, data):
        take = data[: self.left]
        self.body += take
        self.left -= len(take)
        self.buf = data[len(take):]
        self.done = self.left == 0


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values_us):
    return {
        "n": len(values_us),
        "p50": percentile(values_us, 50),
        "p90": percentile(values_us, 90),
        "p99": percentile(values_us, 99),
        "p999": percentile(values_us, 99.9),
        "max": max(values_us) if values_us else None,
    }


# --- probe -------------------------------------------------------------------------------

def probe(args, req):
    ttfb, ttlb, errors, overhead = [], [], [], []
    sock = None
    leftover = b""
    for i in range(args.n):
        try:
            if sock is None:
                sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                leftover = b""
            t0 = time.perf_counter()
            sock.sendall(req)
            buf = leftover
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed before the response head")
                buf += data
            head, _, rest = buf.partition(b"\r\n\r\n")
            status, headers = parse_head(head)
            t_first = time.perf_counter() if rest else None
            if "chunked" in headers.get("transfer-encoding", ""):
                dec = Chunked()
            elif "content-length" in headers:
                # A JSON answer (the profiler drives scenario (a) through here too).
                dec = Sized(int(headers["content-length"]))
            else:
                raise ValueError(f"status {status}, neither chunked nor sized: {headers}")
            dec.feed(rest)
            while not dec.done:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed mid-stream")
                if t_first is None:
                    t_first = time.perf_counter()
                dec.feed(data)
            t_end = time.perf_counter()
            leftover = dec.buf
            if status != 200:
                raise ValueError(f"status {status}: {bytes(dec.body[:200])!r}")
            if args.expect and args.expect.encode() not in dec.body[-400:]:
                raise ValueError(f"stream did not end with {args.expect!r}")
            if i >= args.warmup:
                ttfb.append((t_first - t0) * 1e6)
                ttlb.append((t_end - t0) * 1e6)
                # sira's own account of its time (provider waits excluded), to set beside
                # what the client measured.
                if headers.get("x-sira-overhead-us", "").isdigit():
                    overhead.append(float(headers["x-sira-overhead-us"]))
            if headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
        except Exception as e:  # one failed stream is a result, not a crash
            errors.append(f"{type(e).__name__}: {e}")
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return {"streams": len(ttfb), "errors": len(errors), "error_samples": errors[:5],
            "ttfb_us": summary(ttfb), "ttlb_us": summary(ttlb),
            "sira_overhead_us": summary(overhead)}


# --- hold --------------------------------------------------------------------------------

async def one_stream(args, req, connect_gate, opened, state):
    first = True
    try:
        async with connect_gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port), args.timeout)
        t0 = time.perf_counter()
        writer.write(req)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), args.timeout)
        status, headers = parse_head(head[:-4])
        # Ten thousand streams share one Python thread with the mock's core: keep the
        # per-read work to an append, and decode the chunked body once at the end.
        raw = bytearray()
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            data = await asyncio.wait_for(reader.read(65536), args.timeout)
            if not data:
                raise ConnectionError("closed mid-stream")
            raw += data
            if first:
                first = False
                state["ttfb"].append((time.perf_counter() - t0) * 1e6)
                opened()
        writer.close()
        dec = Chunked()
        dec.feed(bytes(raw))
        if status != 200 or not dec.done:
            raise ValueError(f"status {status}, complete={dec.done}")
        if args.expect and args.expect.encode() not in dec.body[-400:]:
            raise ValueError(f"stream did not end with {args.expect!r}")
        state["ok"] += 1
    except Exception as e:
        state["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        state["ended"] += 1
    if first:
            opened()  # a failed stream will never open: do not wait for it


async def hold(args, req):
    state = {"ok": 0, "errors": [], "ttfb": [], "ended": 0}
    # Bounded parallel connects: a burst of 10,000 SYNs would overflow the listen backlog
    # and measure the kernel's SYN retry timer instead of the gateway.
    gate = asyncio.Semaphore(args.connect_parallel)
    remaining = [args.n]
    all_open = asyncio.Event()
    started = time.perf_counter()

    def opened():
        remaining[0] -= 1
        if remaining[0] == 0:
            all_open.set()

    tasks = [asyncio.create_task(one_stream(args, req, gate, opened, state))
             for _ in range(args.n)]

    async def progress():
        # For the log: where a slow or stuck run is.
        while True:
            await asyncio.sleep(5)
            print(f"hold: {args.n - remaining[0]} opened, {state['ended']} ended, "
                  f"{len(state['errors'])} errors", file=sys.stderr, flush=True)

    reporter = asyncio.create_task(progress())
    await all_open.wait()
    open_s = time.perf_counter() - started
    # How many are open right now: streams that ended already (a slow ramp) do not count.
    still_open = args.n - state["ended"]
    print(f"ALL_OPEN {still_open}", flush=True)
    # The harness samples RSS now; give it a moment while every stream is still open.
    await asyncio.sleep(args.settle)
    await asyncio.gather(*tasks)
    reporter.cancel()
    return {"streams": args.n, "ok": state["ok"], "errors": len(state["errors"]),
            "error_samples": state["errors"][:5], "open_seconds": round(open_s, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
            "open_at_sample": still_open,
            "ttfb_us": summary(state["ttfb"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["probe", "hold"])
    ap.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path")
    ap.add_argument("--body", required=True, help="file with the JSON request body")
    ap.add_argument("--header", action="append", default=[], help="'name: value'")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5, help="probe: untimed first streams")
    ap.add_argument("--expect", default="", help="text the stream must end with")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--connect-parallel", type=int, default=256)
    ap.add_argument("--settle", type=float, default=1.0, help="hold: seconds after ALL_OPEN")
    args = ap.parse_args()

    rest = args.url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    args.host, _, port = hostport.partition(":")
    args.port = int(port or 80)
    with open(args.body, "rb") as f:
        body = f.read()
    req = request_bytes(hostport, "/" + path, body, args.header)
    if args.mode == "probe":
        args.n += args.warmup
        result = probe(args, req)
    else:
        result = asyncio.run(hold(args, req))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
