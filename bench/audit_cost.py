#!/usr/bin/env python3
"""What online parity audits cost a server: throughput of `lockstep serve` under a fixed load
with audits off, at --audit-rate 0.02 and at --audit-rate 1 (every request re-scored by the CPU
reference in the background).

Usage: python3 bench/audit_cost.py PATH/TO/lockstep MODEL.gguf [--requests N] [--clients C]
           [--tokens T] [--threads N] [--parallel N] [--rates 0,0.02,1] [--rounds R]
           [--drain-wait S]

Each round starts one server per rate (in turn), sends N greedy /v1/completions requests of T
tokens from C concurrent clients, and reports generated tokens per second of wall time. It then
waits (up to --drain-wait seconds, default 120) for the auditor to finish what it queued and
reports the server's CPU time (user + system, from /proc) per generated token, which a machine
shared with other work disturbs much less than wall time, and the audits run and dropped and
their median time (from /parity). Standard library only; Linux.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import threading
import time
import urllib.request

PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to", "One day, a big",
           "Tom and his mom", "The sun was", "In the park", "A bird sang"]


def start(binary, model, rate, args):
    proc = subprocess.Popen(
        [binary, "serve", "-m", model, "--port", "0", "-t", str(args.threads), "--parallel",
         str(args.parallel), "-c", str(args.ctx), "--audit-rate", str(rate)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, "http://127.0.0.1:%s" % m.group(1)
    raise RuntimeError("server did not start")


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(base, body):
    req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def load(base, args):
    todo = list(range(args.requests))
    lock = threading.Lock()
    tokens = [0]

    def client():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            r = post(base, {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": args.tokens,
                            "temperature": 0})
            with lock:
                tokens[0] += r["usage"]["completion_tokens"]

    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tokens[0] / (time.time() - t0), tokens[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--rates", default="0,0.02,1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--drain-wait", type=float, default=120,
                    help="seconds to wait for the auditor's queue after the load")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results = {r: [] for r in rates}
    cpu_per_token = {r: [] for r in rates}
    tokens_total = [0]
    audits = {r: [] for r in rates}
    for _ in range(args.rounds):
        for rate in rates:
            proc, base = start(args.binary, args.model, rate, args)
            try:
                post(base, {"prompt": "Warm up", "max_tokens": 4, "temperature": 0})
                tps, n = load(base, args)
                results[rate].append(tps)
                tokens_total[0] = n + 4
                deadline = time.time() + args.drain_wait
                while True:
                    with urllib.request.urlopen(base + "/parity") as r:
                        p = json.load(r)
                    a = p["audits"]
                    done = a["run"] + a["dropped"] >= int(rate * (args.requests + 1))
                    if (a["waiting"] == 0 and done) or time.time() > deadline:
                        break
                    time.sleep(0.2)
                cpu = cpu_seconds(proc.pid)
                ms = [x["ms"] for x in p["recent_audits"]]
                audits[rate].append("%d run/%d dropped%s" % (
                    a["run"], a["dropped"],
                    ", median %.0f ms" % statistics.median(ms) if ms else ""))
                cpu_per_token[rate].append(1000 * cpu / tokens_total[0])
            finally:
                proc.terminate()
                proc.wait()
    base_tps = statistics.median(results[rates[0]])
    base_cpu = statistics.median(cpu_per_token[rates[0]])
    for rate in rates:
        cpu = statistics.median(cpu_per_token[rate])
        print("audit-rate %-5g  CPU %.2f ms per generated token, median (runs: %s)  %+.1f%% vs "
              "rate %g" % (rate, cpu, ", ".join("%.2f" % v for v in cpu_per_token[rate]),
                           100 * (cpu / base_cpu - 1), rates[0]))
    for rate in rates:
        med = statistics.median(results[rate])
        print("audit-rate %-5g  %8.1f tok/s median (runs: %s)  %+.1f%% vs rate %g  audits at "
              "the end of the load: %s" % (
                  rate, med, ", ".join("%.1f" % v for v in results[rate]),
                  100 * (med / base_tps - 1), rates[0], audits[rate]))


if __name__ == "__main__":
    main()
