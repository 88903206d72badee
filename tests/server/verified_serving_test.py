#!/usr/bin/env python3
"""Serving stays verified: online parity audits, quarantine, re-probe, /metrics and /parity of
`lockstep serve` on stories260K, with the fast `cpu` path (or the backend named by
$LOCKSTEP_TEST_CANDIDATE, e.g. `cuda` on the GPU machine, where `--backend auto` picks it: a
forced backend has no fallback to quarantine to) as the audited candidate and the TEST
KNOB faults that pass the load-time gate (docs/parity.md: after_calls, from_position).

Usage (from the repository root, as ctest runs it):
    python3 tests/server/verified_serving_test.py PATH/TO/lockstep
With a candidate other than `cpu` that this machine cannot open, it says so and exits 77 (ctest's
SKIP_RETURN_CODE).

Standard library only. Prints one line per check and a closing `N passed, M failed`; exits
non-zero on failure. Fails (does not skip) when ../shared is missing.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

MODEL = "../shared/models/stories260K.gguf"
CANDIDATE = os.environ.get("LOCKSTEP_TEST_CANDIDATE", "cpu")
TAG_RE = re.compile(r"\[lockstep-parity-v1\] " + CANDIDATE + r" path rejected while serving: "
                    r"(cosine|KL|top-1 margin) vs CPU = \S+ \(.*\) at token (\d+) of request "
                    r"(req-\d+)")


class Server:
    """`lockstep serve` on a free loopback port, with extra flags and environment."""

    def __init__(self, binary, *extra, env=None):
        self.proc = subprocess.Popen(
            [binary, "serve", "-m", MODEL, "--port", "0", "-t", "1", "-c", "256"] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, **(env or {})))
        self.stderr = []
        self.port = None
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+) \(backend (\S+), (.*)\)$", line)
            if m:
                self.port, self.backend, self.verdict = int(m.group(1)), m.group(2), m.group(3)
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("server did not start: " + "".join(self.stderr))
        threading.Thread(target=self._drain, daemon=True).start()
        self.base = "http://127.0.0.1:%d" % self.port

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def log(self):
        return "".join(self.stderr)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(server, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, hdrs, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, e.headers, e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def complete(server, prompt="Once upon a time", max_tokens=20):
    return request(server, "POST", "/v1/completions",
                   {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0})


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def wait_for(what, fn, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def parity(server):
    status, _, body = request(server, "GET", "/parity")
    check(status == 200, "/parity status %s" % status)
    return body


def parse_metrics(text):
    """{name: [(labels dict, value)]} from the Prometheus text format; every sample line and
    every # TYPE must be well formed."""
    samples, types = {}, {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            check(kind in ("counter", "gauge", "histogram"), "type " + line)
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = line_re.match(line)
        check(m, "malformed sample line %r" % line)
        labels = dict(label_re.findall(m.group(3) or ""))
        samples.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    for name in samples:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        check(name in types or base in types, "sample %s has no # TYPE" % name)
    return samples


def metric(samples, name, **labels):
    total = 0.0
    for l, v in samples.get(name, []):
        if all(l.get(k) == v2 for k, v2 in labels.items()):
            total += v
    return total


def main():
    if len(sys.argv) != 2:
        print("usage: verified_serving_test.py PATH/TO/lockstep", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.path.exists(MODEL):
        print("FAIL: %s is missing (tests need ../shared beside the checkout)" % MODEL)
        print("0 passed, 1 failed")
        return 1
    if CANDIDATE != "cpu":
        r = subprocess.run([binary, "run", "-m", MODEL, "--backend", CANDIDATE, "--parity", "off",
                            "-n", "1", "-p", "Once"], capture_output=True, text=True, timeout=120)
        if r.returncode == 4:  # the device exit code: no such device or backend here
            print("SKIP: the %s backend cannot run here: %s" % (CANDIDATE, r.stderr.strip()[-300:]))
            return 77
        if r.returncode != 0:
            print("FAIL: --backend %s exited %d: %s" % (CANDIDATE, r.returncode, r.stderr[-300:]))
            print("0 passed, 1 failed")
            return 1
    results = []

    def test(fn):
        t0 = time.time()
        try:
            fn()
            results.append(True)
            print("PASS %s (%.2f s)" % (fn.__name__, time.time() - t0), flush=True)
        except Exception as e:  # one failed check must not hide the others
            results.append(False)
            print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, e), flush=True)

    def honest_run_passes_every_audit_and_metrics_move():
        s = Server(binary, "--parallel", "2", "--audit-rate", "1")
        try:
            check(s.backend == CANDIDATE, "candidate " + s.backend)
            samples = parse_metrics(request(s, "GET", "/metrics")[2])
            check(metric(samples, "lockstep_audits_total") == 0, "audits before any request")
            check(metric(samples, "lockstep_parity_gate_verdict", candidate=CANDIDATE,
                         status="passed") == 1, "gate verdict metric")
            prompts = ["Once upon a time", "Lily and Ben", "The cat sat", "One day, a big"]
            out = [None] * len(prompts)

            def run(i):
                out[i] = complete(s, prompts[i], 24)
            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for status, hdrs, body in out:
                check(status == 200, "status %s %s" % (status, body))
                check(hdrs["X-Lockstep-Backend"] == CANDIDATE, "served by " + hdrs["X-Lockstep-Backend"])
                check(re.fullmatch(r"req-\d+", hdrs["X-Lockstep-Request"] or ""), "request id")
            p = wait_for("4 audits", lambda: (lambda p: p if p["audits"]["run"] == 4 else None)(
                parity(s)))
            check(p["state"] == "serving" and p["serving"] == CANDIDATE, "state %s" % p["state"])
            check(p["load"]["status"] == "passed" and p["load"]["positions"] == 64, "load %s" % p)
            check(p["audits"]["failed"] == 0, "failed audits on an honest run: %s" % p)
            check(len(p["recent_audits"]) == 4, "history %s" % p["recent_audits"])
            for a in p["recent_audits"]:
                check(a["passed"] and a["generated_tokens"] == 24 and a["worst_cosine"] > 0.99 and
                      a["worst_kl"] < 0.05, "audit %s" % a)
            samples = parse_metrics(request(s, "GET", "/metrics")[2])
            check(metric(samples, "lockstep_requests_total", backend=CANDIDATE) == 4, "requests")
            check(metric(samples, "lockstep_completion_tokens_total") == 96, "tokens out")
            check(metric(samples, "lockstep_prompt_tokens_total") > 8, "tokens in")
            check(metric(samples, "lockstep_time_to_first_token_seconds_count") == 4, "ttft count")
            check(metric(samples, "lockstep_inter_token_latency_seconds_count") == 4 * 23,
                  "itl count")
            check(metric(samples, "lockstep_time_to_first_token_seconds_bucket", le="+Inf") == 4,
                  "ttft +Inf bucket")
            check(metric(samples, "lockstep_audits_total") == 4, "audits metric")
            check(metric(samples, "lockstep_audits_failed_total") == 0, "failed metric")
            check(0.99 < metric(samples, "lockstep_audit_worst_cosine") <= 1, "worst cosine")
            check(metric(samples, "lockstep_serving_backend", backend=CANDIDATE, state="serving") == 1,
                  "serving backend metric")
            for name in ("lockstep_queue_depth", "lockstep_batch_size", "lockstep_audit_worst_kl",
                         "lockstep_audits_dropped_total", "lockstep_quarantined"):
                check(name in samples, "missing " + name)
            # 4 requests of 24 tokens, 2 slots: at least 48 steps, each with 1 or 2 rows.
            steps = metric(samples, "lockstep_steps_total")
            check(steps >= 48 and steps <= metric(samples, "lockstep_step_rows_total") <= 2 * steps,
                  "steps %s rows %s" % (steps, metric(samples, "lockstep_step_rows_total")))
            check(metric(samples, "lockstep_step_forward_seconds_total") > 0 and
                  metric(samples, "lockstep_step_host_seconds_total") > 0, "step times")
            check("[lockstep-parity-v1]" not in s.log().split("listening on")[1],
                  "tagged line on an honest run: " + s.log())
        finally:
            check(s.stop() == 0, "exit code")

    def late_fault_passes_the_gate_is_caught_and_quarantined():
        # Corrupt logits from the 30th forward call on: the gate's probe takes 5 calls.
        s = Server(binary, "--parallel", "2", "--audit-rate", "1", "--reprobe-after", "1",
                   env={"LOCKSTEP_FAULT": "after_calls:30:8"})
        try:
            check(s.backend == CANDIDATE and s.verdict.startswith("parity passed"),
                  "the gate should pass: %s %s" % (s.backend, s.verdict))
            status, hdrs, _ = complete(s)
            check(status == 200 and hdrs["X-Lockstep-Backend"] == CANDIDATE, "first request")
            complete(s)  # calls 21..41: corrupted from call 30
            p = wait_for("quarantine", lambda: (lambda p: p if p["state"] == "quarantined"
                                                else None)(parity(s)))
            check(p["serving"] == "cpu-ref" and p["audits"]["failed"] >= 1, "parity %s" % p)
            m = TAG_RE.search(s.log())
            check(m, "no tagged line: " + s.log())
            failed = [a for a in p["recent_audits"] if not a["passed"]]
            check(failed and failed[0]["request"] == m.group(3), "the line names the request")
            status, hdrs, body = complete(s)
            check(status == 200 and hdrs["X-Lockstep-Backend"] == "cpu-ref",
                  "after quarantine: %s %s" % (hdrs["X-Lockstep-Backend"], body))
            # The fault is still there: the re-probe rejects and the quarantine stays.
            p = wait_for("a re-probe", lambda: (lambda p: p if p["reprobes"] else None)(parity(s)))
            check(p["reprobes"][0]["status"] == "rejected", "re-probe %s" % p["reprobes"])
            check(p["state"] == "quarantined", "restored with the fault present")
            status, hdrs, _ = complete(s)
            check(hdrs["X-Lockstep-Backend"] == "cpu-ref", "still on the reference")
            samples = parse_metrics(request(s, "GET", "/metrics")[2])
            check(metric(samples, "lockstep_quarantined") == 1, "quarantined metric")
            check(metric(samples, "lockstep_requests_total", backend="cpu-ref") >= 2, "routed")
            check(metric(samples, "lockstep_reprobes_total", result="rejected") >= 1, "reprobes")
            check(metric(samples, "lockstep_audit_worst_cosine") < 0.99, "worst cosine")
            check("re-probe" in s.log(), "no re-probe line")
        finally:
            check(s.stop() == 0, "exit code")

    def deep_fault_with_a_forced_strict_backend_stops_serving():
        # Corrupt logits at positions >= 80: the probe covers 0..66.
        s = Server(binary, "--backend", CANDIDATE, "--parity", "strict", "--audit-rate", "1",
                   env={"LOCKSTEP_FAULT": "from_position:80:8"})
        try:
            check(s.backend == CANDIDATE and s.verdict.startswith("parity passed"), s.verdict)
            status, _, _ = complete(s, max_tokens=20)  # positions < 30: clean
            wait_for("an audit", lambda: parity(s)["audits"]["run"] == 1)
            check(parity(s)["audits"]["failed"] == 0, "short request failed its audit")
            status, _, body = complete(s, max_tokens=120)
            check(status == 200, "long request %s" % body)
            p = wait_for("failed", lambda: (lambda p: p if p["state"] == "failed" else None)(
                parity(s)))
            m = TAG_RE.search(s.log())
            check(m and int(m.group(2)) >= 70, "tagged line at a deep token: " + s.log())
            status, _, body = complete(s)
            check(status == 503 and body["error"]["code"] == "parity_failed",
                  "after drift: %s %s" % (status, body))
        finally:
            check(s.stop() == 0, "exit code")

    def bad_flags_exit_2_naming_the_flag():
        for flags, name in ((["--audit-rate", "1.5"], "--audit-rate"),
                            (["--on-drift", "panic"], "--on-drift"),
                            (["--audit-rate", "-0.1"], "--audit-rate")):
            r = subprocess.run([binary, "serve", "-m", MODEL, "--port", "0"] + flags,
                               capture_output=True, text=True, timeout=30)
            check(r.returncode == 2 and name in r.stderr,
                  "%s: exit %d, %s" % (flags, r.returncode, r.stderr))

    test(bad_flags_exit_2_naming_the_flag)
    test(honest_run_passes_every_audit_and_metrics_move)
    test(late_fault_passes_the_gate_is_caught_and_quarantined)
    test(deep_fault_with_a_forced_strict_backend_stops_serving)
    passed = sum(results)
    print("%d passed, %d failed" % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
