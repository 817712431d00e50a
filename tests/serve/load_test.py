#!/usr/bin/env python3
"""Load test of `gemmatune serve` (a benchmark, not part of ctest): N concurrent streaming chat
clients for D seconds on loopback. Standard library only.

Starts the server itself (--binary/--model/--adapter), or uses a running one (--url). Each client
loops: one streamed chat completion (questions from examples/demo_chat.jsonl, alternating between
the base model and the adapter), measuring the time to the first content token (TTFT) and the
gaps between content chunks (inter-token latency, ITL). A 429 is "clean" when it carries OpenAI's
error body and Retry-After; the client then waits Retry-After seconds. Anything else -- another
status, a connection error, a stream without [DONE] or finish_reason -- is an error.

Pass/fail: no errors other than clean 429s, at least one completed request per client on average,
and the server's peak RSS (VmHWM, read from /proc) under --rss-bound-mib. Prints p50/p99 TTFT and
ITL, requests, tokens and aggregate tokens/s; --json FILE writes them.

  tests/serve/load_test.py --binary build/gemmatune --model build/demo/tiny-gemma3 \
      --adapter demo=build/demo/run/adapter --clients 64 --duration 60
"""
import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

QUESTIONS = ["What is the capital of France?", "What is the capital of Japan?", "Who wrote Hamlet?",
             "What is 2 + 2?", "Name a primary colour."]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = self.r429 = self.tokens = 0
        self.errors = []
        self.ttft, self.itl = [], []


def client(idx, host, port, models, deadline, max_tokens, st):
    n = 0
    while time.time() < deadline:
        model = models[(idx + n) % len(models)]
        q = QUESTIONS[(idx + n) % len(QUESTIONS)]
        n += 1
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": q}], "stream": True,
                           "max_tokens": max_tokens, "temperature": 0.8, "seed": idx * 100000 + n,
                           "stream_options": {"include_usage": True}})
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=300)
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status == 429:
                err = json.loads(resp.read() or b"{}")
                ra = resp.getheader("Retry-After")
                conn.close()
                clean = ra is not None and err.get("error", {}).get("type") == "rate_limit_exceeded"
                with st.lock:
                    if clean:
                        st.r429 += 1
                    else:
                        st.errors.append(f"unclean 429: {err} Retry-After={ra}")
                time.sleep(float(ra or 1))
                continue
            if resp.status != 200:
                with st.lock:
                    st.errors.append(f"HTTP {resp.status}: {resp.read()[:200]!r}")
                conn.close()
                continue
            first, last, gaps, done, finish, toks = None, None, [], False, None, 0
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    done = True
                    break
                j = json.loads(data)
                if "error" in j:
                    raise RuntimeError(f"stream error: {j['error']}")
                if j.get("usage"):
                    toks = j["usage"]["completion_tokens"]
                for c in j.get("choices", []):
                    if c.get("delta", {}).get("content"):
                        now = time.perf_counter()
                        if first is None:
                            first = now
                        else:
                            gaps.append(now - last)
                        last = now
                    if c.get("finish_reason"):
                        finish = c["finish_reason"]
            conn.close()
            if not done or finish not in ("stop", "length"):
                raise RuntimeError(f"stream ended without [DONE]/finish_reason (done={done}, finish={finish})")
            with st.lock:
                st.ok += 1
                st.tokens += toks
                if first is not None:
                    st.ttft.append(first - t0)
                st.itl.extend(gaps)
        except Exception as e:  # noqa: BLE001 -- every failure is counted and reported
            with st.lock:
                st.errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.1)


def rss_of(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (http://127.0.0.1:8080); otherwise --binary/--model start one")
    ap.add_argument("--pid", type=int, help="with --url: the server's pid, for its RSS")
    ap.add_argument("--binary")
    ap.add_argument("--model")
    ap.add_argument("--adapter", action="append", default=[], help="NAME=DIR, passed to serve --adapter")
    ap.add_argument("--serve-args", default="--max-seqs 8 --max-queue 32 --ctx 512 --threads 2")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rss-bound-mib", type=float, default=1024)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()

    proc = None
    if a.url:
        m = re.match(r"http://([^:/]+):(\d+)", a.url)
        host, port, pid = m.group(1), int(m.group(2)), a.pid
    else:
        if not (a.binary and a.model):
            ap.error("--binary and --model (or --url)")
        cmd = [a.binary, "serve", "--model", a.model, "--port", "0"] + a.serve_args.split()
        for ad in a.adapter:
            cmd += ["--adapter", ad]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        host, port = "127.0.0.1", None
        for line in proc.stdout:
            sys.stdout.write("server: " + line)
            mm = re.search(r"listening on http://[^:]+:(\d+)", line)
            if mm:
                port = int(mm.group(1))
                break
        if port is None:
            sys.exit("the server did not start")
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        pid = proc.pid

    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/v1/models")
    models = [d["id"] for d in json.loads(conn.getresponse().read())["data"]]
    conn.close()
    print(f"models: {models}; {a.clients} streaming clients for {a.duration:.0f} s")

    st = Stats()
    peak = {"rss": 0}
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            if pid:
                peak["rss"] = max(peak["rss"], rss_of(pid).get("VmRSS", 0))
            time.sleep(0.5)

    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    t0 = time.time()
    deadline = t0 + a.duration
    threads = [threading.Thread(target=client, args=(i, host, port, models, deadline, a.max_tokens, st)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    stop.set()
    hwm = rss_of(pid).get("VmHWM", 0) if pid else 0
    peak_rss = max(peak["rss"], hwm)

    metrics = ""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        pass
    rc_server = None
    if proc:
        proc.send_signal(signal.SIGTERM)
        try:
            rc_server = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc_server = "timeout"

    res = {
        "clients": a.clients, "duration_s": round(wall, 1), "requests_ok": st.ok, "clean_429": st.r429,
        "errors": len(st.errors), "completion_tokens": st.tokens, "aggregate_tokens_per_s": round(st.tokens / wall, 1),
        "ttft_p50_ms": round(pct(st.ttft, 50) * 1e3, 1), "ttft_p99_ms": round(pct(st.ttft, 99) * 1e3, 1),
        "itl_p50_ms": round(pct(st.itl, 50) * 1e3, 2), "itl_p99_ms": round(pct(st.itl, 99) * 1e3, 2),
        "peak_rss_mib": round(peak_rss / 2**20, 1), "rss_bound_mib": a.rss_bound_mib, "server_exit": rc_server,
    }
    print(json.dumps(res, indent=1))
    for e in st.errors[:10]:
        print("error:", e)
    for line in metrics.splitlines():
        if line.startswith(("gemmatune_requests_total", "gemmatune_requests_rejected_total", "gemmatune_generation_tokens_total",
                            "gemmatune_steps_total", "gemmatune_streams_cancelled_total")):
            print("metrics:", line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    ok = not st.errors and st.ok >= a.clients and (not pid or peak_rss <= a.rss_bound_mib * 2**20) and rc_server in (None, 0)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
