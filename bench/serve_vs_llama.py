#!/usr/bin/env python3
"""`gemmatune serve` vs llama.cpp's `llama-server` on the same model, host, threads and concurrency
(issue 12's cross-check; a benchmark, never a test dependency). Standard library only.

Starts both servers (ours on the Hugging Face folder, llama-server on a GGUF of the same weights,
e.g. the bf16 GGUF made by ../shared/peers/llamacpp_peer.sh), then runs rounds; in each round, for
each server in turn: C concurrent greedy /v1/completions requests (same prompt text, max_tokens N,
no stop), for every C in --concurrency. "aggregate" = completion tokens of all C requests / wall
time from the first send to the last reply. Prints the medians per (server, C) and the ratios.

  bench/serve_vs_llama.py --gemmatune build/gemmatune --model DIR --llama-server BIN --gguf FILE \
      --threads 2 --concurrency 1,8 --max-tokens 32 --rounds 3
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

PROMPT = ("The history of computing is a story of people who wanted to calculate faster than they "
          "could by hand, and of the machines they built to do it. Tell me about it.")


def wait_ready(port, path, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"server on port {port} not ready after {timeout} s")


def one(port, model, max_tokens, out, i):
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True}  # llama-server: never stop early; ours ignores unknown fields
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"port {port}: HTTP {r.status}: {data[:300]!r}")
    j = json.loads(data)
    out[i] = int(j["usage"]["completion_tokens"])


def run(port, model, conc, max_tokens):
    out = [0] * conc
    ths = [threading.Thread(target=one, args=(port, model, max_tokens, out, i)) for i in range(conc)]
    t0 = time.time()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    dt = time.time() - t0
    return sum(out) / dt, sum(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gemmatune", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=1024, help="context per sequence")
    ap.add_argument("--json")
    a = ap.parse_args()
    concs = [int(x) for x in a.concurrency.split(",")]
    slots = max(concs)
    procs = []
    try:
        ours = subprocess.Popen([a.gemmatune, "serve", "--model", a.model, "--port", "18431", "--threads",
                                 str(a.threads), "--max-seqs", str(slots), "--ctx", str(a.ctx)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ours)
        llama = subprocess.Popen([a.llama_server, "-m", a.gguf, "--port", "18432", "-t", str(a.threads), "-tb",
                                  str(a.threads), "-np", str(slots), "-c", str(a.ctx * slots), "--no-warmup"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(llama)
        wait_ready(18431, "/health")
        wait_ready(18432, "/health")
        base = os.path.basename(os.path.normpath(a.model))  # our base model's name is its folder's
        servers = [("gemmatune", 18431, base), ("llama-server", 18432, base)]
        # warm-up: one short request each (page in the weights)
        for _, port, model in servers:
            run(port, model, 1, 4)
        res = {}
        for r in range(a.rounds):
            for c in concs:
                for name, port, model in servers:
                    tps, toks = run(port, model, c, a.max_tokens)
                    res.setdefault((name, c), []).append(tps)
                    print(f"round {r} {name:13s} C={c:2d}: {toks} tokens, {tps:7.2f} tok/s aggregate", flush=True)
        print("\nmedians (aggregate completion tokens/s):")
        summary = {}
        for c in concs:
            g = statistics.median(res[("gemmatune", c)])
            l = statistics.median(res[("llama-server", c)])
            summary[c] = {"gemmatune": g, "llama_server": l, "ratio": g / l}
            print(f"  C={c:2d}: gemmatune {g:7.2f}  llama-server {l:7.2f}  ratio {g / l:5.2f}x")
        for name in ("gemmatune", "llama-server"):
            if len(concs) > 1:
                s = statistics.median(res[(name, concs[-1])]) / statistics.median(res[(name, concs[0])])
                print(f"  {name}: C={concs[-1]} vs C={concs[0]}: {s:.2f}x")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({str(k): v for k, v in summary.items()}, f, indent=1)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
