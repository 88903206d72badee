#!/usr/bin/env python3
"""Load generator for `lockstep serve` (or any OpenAI-compatible server): N concurrent streaming
clients, each sending requests back to back to /v1/completions, for a fixed number of requests.
Reports request throughput, aggregate generated tokens per second, time to first token (TTFT)
and inter-token latency (ITL) p50/p99. Standard library only; loopback by default.

    ./build/lockstep serve -m MODEL --parallel 32 --port 8080 &
    python3 bench/serve_load.py --url http://127.0.0.1:8080 -c 32 -n 128 --max-tokens 128

Every streamed chunk of text counts as one token (the server sends one chunk per sampled token
unless a stop string or an unfinished UTF-8 character holds text back); the usage block of the
final chunk gives the exact completion token count used for the throughput.
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def one_request(host, port, body, key, timeout):
    """(ttft_s, [inter-token gaps s], completion_tokens, total_s) of one streamed request."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), headers)
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError("status %d: %s" % (r.status, r.read()[:200]))
    first, last, gaps, tokens = None, None, [], 0
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError("stream error: %s" % chunk["error"])
        now = time.perf_counter()
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if chunk["choices"] and chunk["choices"][0].get("text"):
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
    conn.close()
    end = time.perf_counter()
    return (first or end) - t0, gaps, tokens, end - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("-c", "--clients", type=int, default=8, help="concurrent streaming clients")
    ap.add_argument("-n", "--requests", type=int, default=64, help="requests in all")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per request")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if a.clients < 1 or a.requests < 1 or a.max_tokens < 1:
        print("serve_load.py: -c, -n and --max-tokens must be >= 1", file=sys.stderr)
        return 2
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port or 80

    lock = threading.Lock()
    next_id = iter(range(a.requests))
    ttfts, gaps, errors = [], [], []
    tokens = [0]

    def client():
        while True:
            with lock:
                i = next(next_id, None)
            if i is None:
                return
            # Distinct prompts and greedy decoding; ignore_eos is not an OpenAI field, so
            # max_tokens bounds each answer and an early end shortens it.
            body = {"prompt": "%s %d" % (a.prompt, i), "max_tokens": a.max_tokens,
                    "temperature": 0, "stream": True}
            try:
                ttft, g, n, _ = one_request(host, port, body, a.api_key, a.timeout)
                with lock:
                    ttfts.append(ttft)
                    gaps.extend(g)
                    tokens[0] += n
            except Exception as e:  # counted and reported, the others go on
                with lock:
                    errors.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = len(ttfts)
    out = {
        "clients": a.clients, "requests": a.requests, "completed": done, "errors": len(errors),
        "max_tokens": a.max_tokens, "wall_s": round(wall, 3),
        "requests_per_s": round(done / wall, 3),
        "completion_tokens": tokens[0], "tokens_per_s": round(tokens[0] / wall, 2),
        "ttft_ms_p50": round(1000 * percentile(ttfts, 0.5), 2),
        "ttft_ms_p99": round(1000 * percentile(ttfts, 0.99), 2),
        "itl_ms_p50": round(1000 * percentile(gaps, 0.5), 2),
        "itl_ms_p99": round(1000 * percentile(gaps, 0.99), 2),
    }
    if a.json:
        print(json.dumps(out))
    else:
        print("| clients | requests | max_tokens | wall s | req/s | gen tok/s | TTFT p50 ms | "
              "TTFT p99 ms | ITL p50 ms | ITL p99 ms | errors |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print("| %(clients)d | %(completed)d | %(max_tokens)d | %(wall_s).1f | "
              "%(requests_per_s).2f | %(tokens_per_s).1f | %(ttft_ms_p50).1f | %(ttft_ms_p99).1f | "
              "%(itl_ms_p50).1f | %(itl_ms_p99).1f | %(errors)d |" % out)
    for e in errors[:5]:
        print("serve_load.py: error: %s" % e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
