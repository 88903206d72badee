#!/usr/bin/env python3
"""`lockstep serve` through real clients: the `openai` PyPI package, curl, and an ollama-style
NDJSON reader, against stories260K on a free loopback port.

Usage (from the repository root, as ctest runs it):
    python3 tests/server/openai_clients_test.py PATH/TO/lockstep

Installs `openai` into build/server-venv on first use (skipped when present) and re-runs itself
there. Prints one line per check and a closing `N passed, M failed`; exits non-zero on failure.
Fails (does not skip) when ../shared is missing.
"""
import http.client
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
VENV = "build/server-venv"
API_KEY = "test-key-123"
CTX = 256


def ensure_venv():
    """Re-executes this script under the venv's python, creating it and installing openai first."""
    if os.environ.get("LOCKSTEP_SERVER_TEST_VENV") == "1":
        return
    py = os.path.join(VENV, "bin", "python")
    have = os.path.exists(py) and subprocess.run(
        [py, "-c", "import openai"], capture_output=True).returncode == 0
    if not have:
        print("setting up %s with the openai package" % VENV, flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "openai"], check=True)
    env = dict(os.environ, LOCKSTEP_SERVER_TEST_VENV="1")
    os.execve(py, [py] + sys.argv, env)


class Server:
    """A `lockstep serve` process on a free loopback port (--port 0; the port is read from its
    'listening on' line)."""

    def __init__(self, binary, *extra):
        self.proc = subprocess.Popen(
            [binary, "serve", "-m", MODEL, "--host", "127.0.0.1", "--port", "0", "-t", "2",
             "-c", str(CTX)] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        deadline = time.time() + 30
        self.port = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+) \(backend (\S+), parity", line)
            if m:
                self.port = int(m.group(1))
                self.backend = m.group(2)
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("server did not start: " + "".join(self.stderr))
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self.base = "http://127.0.0.1:%d" % self.port

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(server, method, path, body=None, key=API_KEY, raw=None, headers=None):
    """(status, headers, parsed JSON or text) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, hdrs, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, e.headers, e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def curl(server, *args):
    out = subprocess.run(["curl", "-s", "-N", "-H", "Authorization: Bearer " + API_KEY,
                          "-w", "\n%{http_code}"] + list(args), capture_output=True, text=True,
                         timeout=60)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_error(status, body, want_status, want_code=None, what=""):
    check(status == want_status, "%s: status %s, want %s: %s" % (what, status, want_status, body))
    check(isinstance(body, dict) and isinstance(body.get("error"), dict),
          "%s: no error object: %s" % (what, body))
    err = body["error"]
    for k in ("message", "type", "param", "code"):
        check(k in err, "%s: error lacks %s: %s" % (what, k, err))
    if want_code:
        check(err["code"] == want_code, "%s: code %s, want %s" % (what, err["code"], want_code))


def ndjson_lines(server, path, body):
    """Streams an ollama NDJSON response line by line."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", path, json.dumps(body),
                 {"Content-Type": "application/json", "Authorization": "Bearer " + API_KEY})
    r = conn.getresponse()
    check(r.status == 200, "%s: status %s" % (path, r.status))
    check(r.getheader("Content-Type", "").startswith("application/x-ndjson"),
          "content type " + str(r.getheader("Content-Type")))
    lines = [json.loads(l) for l in r.read().decode().splitlines() if l.strip()]
    conn.close()
    return lines


def main():
    if len(sys.argv) != 2:
        print("usage: openai_clients_test.py PATH/TO/lockstep", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.path.exists(MODEL):
        print("FAIL: %s is missing (tests need ../shared beside the checkout)" % MODEL)
        print("0 passed, 1 failed")
        return 1
    ensure_venv()
    import openai  # noqa: E402  (installed by ensure_venv)

    t_start = time.time()
    results = []
    server = Server(binary, "--parallel", "4", "--api-key", API_KEY, "--shutdown-grace", "5")
    client = openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0)
    model_id = "stories260K"

    def test(fn):
        t0 = time.time()
        try:
            fn()
            results.append(True)
            print("PASS %s (%.2f s)" % (fn.__name__, time.time() - t0), flush=True)
        except Exception as e:  # one failed check must not hide the others
            results.append(False)
            print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, e), flush=True)

    def health_and_headers():
        status, hdrs, body = request(server, "GET", "/health", key=None)
        check(status == 200 and body["status"] == "ok", "health: %s %s" % (status, body))
        check(hdrs["X-Lockstep-Backend"] == server.backend, "backend header")
        check(hdrs["X-Lockstep-Parity"].split(";")[0] in ("passed", "not-required", "off"),
              "parity header " + hdrs["X-Lockstep-Parity"])
        check(body["lockstep"]["backend"] == server.backend, "lockstep field")
        models = client.models.list()
        check([m.id for m in models.data] == [model_id], "models " + str(models))
        status, _, tags = request(server, "GET", "/api/tags")
        check(status == 200 and tags["models"][0]["name"] == model_id, "tags %s" % tags)
        status, _, version = request(server, "GET", "/api/version")
        check(status == 200 and "version" in version, "version %s" % version)

    def chat_nonstream_and_stream():
        msgs = [{"role": "system", "content": "You tell stories."},
                {"role": "user", "content": "Once upon a time"}]
        raw = client.chat.completions.with_raw_response.create(
            model=model_id, messages=msgs, max_tokens=24, temperature=0)
        check(raw.headers.get("x-lockstep-backend") == server.backend, "chat header")
        r = raw.parse()
        text = r.choices[0].message.content
        check(r.choices[0].finish_reason in ("stop", "length"), "finish " + r.choices[0].finish_reason)
        check(r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 5, "usage %s" % r.usage)
        check(r.model == model_id, "model " + r.model)
        check(r.model_extra.get("lockstep", {}).get("backend") == server.backend, "lockstep field")
        pieces, finish = [], None
        for chunk in client.chat.completions.create(model=model_id, messages=msgs, max_tokens=24,
                                                    temperature=0, stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        check("".join(pieces) == text, "stream %r != %r" % ("".join(pieces), text))
        check(finish == r.choices[0].finish_reason, "stream finish %s" % finish)

    def completions_and_seed():
        r = client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=16,
                                      temperature=0)
        check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 16,
              "completion %s" % r)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model=model_id, prompt="Once upon a time", max_tokens=16, temperature=0, stream=True))
        check(streamed == r.choices[0].text, "stream %r != %r" % (streamed, r.choices[0].text))
        a = client.completions.create(model=model_id, prompt="The cat", max_tokens=20,
                                      temperature=0.9, seed=7)
        b = client.completions.create(model=model_id, prompt="The cat", max_tokens=20,
                                      temperature=0.9, seed=7)
        check(a.choices[0].text == b.choices[0].text, "same seed, different text")
        stop = r.choices[0].text[4:7]
        s = client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=16,
                                      temperature=0, stop=[stop])
        check(s.choices[0].finish_reason == "stop" and stop not in s.choices[0].text,
              "stop %r: %s" % (stop, s.choices[0]))

    def curl_sse_and_context_end():
        code, body = curl(server, server.base + "/v1/completions", "-d",
                          json.dumps({"prompt": "Lily", "temperature": 0, "stream": True}))
        check(code == 200, "curl status %d" % code)
        events = [l[6:] for l in body.splitlines() if l.startswith("data: ")]
        check(events[-1] == "[DONE]", "last event " + events[-1])
        last = json.loads(events[-2])
        # No max_tokens: greedy runs into the end of the context unless the story ends first.
        fr = last["choices"][0]["finish_reason"]
        check(fr in ("stop", "length"), "finish " + str(fr))
        if fr == "length":
            check(last["usage"]["total_tokens"] == CTX + 1, "context end usage %s" % last["usage"])
        check(last["lockstep"]["backend"] == server.backend, "lockstep in the final chunk")

    def ollama_ndjson():
        body = {"model": model_id, "prompt": "Once upon a time", "raw": True,
                "options": {"temperature": 0, "num_predict": 12}}
        lines = ndjson_lines(server, "/api/generate", body)
        check(all(not l["done"] for l in lines[:-1]) and lines[-1]["done"], "done flags")
        last = lines[-1]
        for k in ("model", "created_at", "done_reason", "eval_count", "prompt_eval_count"):
            check(k in last, "generate lacks " + k)
        check(last["eval_count"] == 12 and last["done_reason"] == "length", "last %s" % last)
        text = "".join(l["response"] for l in lines)
        status, _, whole = request(server, "POST", "/api/generate", dict(body, stream=False))
        check(status == 200 and whole["response"] == text, "non-stream %s" % whole)
        chat = ndjson_lines(server, "/api/chat", {  # ollama clients add ":latest"
            "model": model_id + ":latest", "messages": [{"role": "user", "content": "Hi"}],
            "options": {"temperature": 0, "num_predict": 8}})
        check(chat[-1]["done"] and chat[-1]["message"]["role"] == "assistant", "chat %s" % chat[-1])
        check(chat[-1]["eval_count"] == 8, "chat eval_count %s" % chat[-1])

    def tokenize_roundtrip():
        code, body = curl(server, server.base + "/tokenize", "-d",
                          json.dumps({"content": "Once upon a time"}))
        check(code == 200, "tokenize status %d" % code)
        tokens = json.loads(body)["tokens"]
        check(len(tokens) >= 4, "tokens %s" % tokens)
        code, body = curl(server, server.base + "/detokenize", "-d",
                          json.dumps({"tokens": tokens}))
        check(code == 200 and json.loads(body)["content"].strip() == "Once upon a time",
              "detokenize %s" % body)

    def concurrency_matches_alone():
        prompts = ["Once upon a time %s" % w for w in
                   ("there", "a", "Lily", "Tom", "the", "in", "Ben", "Sue",
                    "one", "Max", "Sam", "big", "dog", "cat", "sun", "day")]
        alone = []
        for p in prompts:
            r = client.completions.create(model=model_id, prompt=p, max_tokens=24, temperature=0)
            alone.append(r.choices[0].text)
        got = [None] * len(prompts)
        errors = []

        def worker(i):
            try:
                c = openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0)
                got[i] = "".join(ch.choices[0].text for ch in c.completions.create(
                    model=model_id, prompt=prompts[i], max_tokens=24, temperature=0, stream=True))
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        check(not errors, "errors %s" % errors)
        for i in range(len(prompts)):
            check(got[i] == alone[i], "request %d: %r alone, %r together" % (i, alone[i], got[i]))

    def disconnect_frees_slot():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/v1/completions",
                     json.dumps({"prompt": "Once", "temperature": 0, "stream": True}),
                     {"Content-Type": "application/json", "Authorization": "Bearer " + API_KEY})
        r = conn.getresponse()
        r.fp.readline()  # the first event has arrived: the request is being served
        status, _, h = request(server, "GET", "/health")
        check(h["slots_processing"] == 1, "busy slots %s" % h)
        conn.sock.shutdown(2)
        conn.close()
        deadline = time.time() + 5
        while time.time() < deadline:
            _, _, h = request(server, "GET", "/health")
            if h["slots_processing"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError("slot still busy after the client left: %s" % h)

    def bad_inputs():
        chat = "/v1/chat/completions"
        msgs = [{"role": "user", "content": "hi"}]
        s, _, b = request(server, "POST", chat, raw=b"{not json")
        check_error(s, b, 400, "invalid_json", "malformed")
        s, _, b = request(server, "POST", chat, {"model": model_id})
        check_error(s, b, 400, "missing_field", "missing messages")
        s, _, b = request(server, "POST", chat, {"messages": "hi"})
        check_error(s, b, 400, "invalid_type", "wrong type")
        s, _, b = request(server, "POST", chat, {"model": "gpt-4o", "messages": msgs})
        check_error(s, b, 404, "model_not_found", "unknown model")
        for field, value in (("temperature", -1), ("temperature", 1e308), ("top_p", 2),
                             ("max_tokens", -5), ("seed", -7), ("max_tokens", 10**30)):
            s, _, b = request(server, "POST", chat, {"messages": msgs, field: value})
            check_error(s, b, 400, None, "%s=%s" % (field, value))
            check(b["error"]["param"] == field, "param %s" % b["error"])
        s, _, b = request(server, "POST", chat, raw=b'{"messages":[{"role":"user","content":"NaN"}],'
                                                    b'"temperature":NaN}')
        check_error(s, b, 400, "invalid_json", "NaN")
        s, _, b = request(server, "POST", chat, {"messages": msgs, "logprobs": True})
        check_error(s, b, 400, "unsupported_parameter", "logprobs")
        s, _, b = request(server, "POST", "/v1/completions",
                          raw=b'{"prompt":"\xff\xfe bad"}')
        check_error(s, b, 400, "invalid_utf8", "invalid UTF-8")
        s, _, b = request(server, "POST", "/v1/completions", {"prompt": ""})
        check_error(s, b, 400, None, "empty prompt")
        s, _, b = request(server, "POST", "/v1/completions", {"prompt": "Once upon a time " * 200})
        check_error(s, b, 400, "context_length_exceeded", "over-long prompt")
        s, _, b = request(server, "POST", "/v1/completions",
                          {"prompt": "Once", "max_tokens": CTX})
        check_error(s, b, 400, "context_length_exceeded", "max_tokens past the context")
        s, _, b = request(server, "POST", "/v1/completions", raw=b'{"prompt":"' + b"a" * (5 << 20) + b'"}')
        check_error(s, b, 413, "body_too_large", "huge body")
        s, _, b = request(server, "GET", "/v1/nothing")
        check_error(s, b, 404, None, "unknown endpoint")
        # After all of that the server still answers.
        r = client.completions.create(model=model_id, prompt="Once", max_tokens=3, temperature=0)
        check(r.usage.completion_tokens == 3, "after bad inputs")

    def api_key():
        s, _, b = request(server, "GET", "/v1/models", key=None)
        check_error(s, b, 401, "invalid_api_key", "missing key")
        s, _, b = request(server, "POST", "/v1/completions", {"prompt": "x"}, key="wrong")
        check_error(s, b, 401, "invalid_api_key", "wrong key")
        bad = openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0)
        try:
            bad.models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError:
            pass

    def busy_queue_503():
        # One slot and room for one waiter: of 8 requests sent at once (each takes 250 steps),
        # at most two are taken at a time and the rest are told to come back later.
        small = Server(binary, "--parallel", "1", "--queue", "1")
        try:
            answers = [None] * 8

            def send(i):
                answers[i] = request(small, "POST", "/v1/completions",
                                     {"prompt": "Once", "max_tokens": 250, "temperature": 0},
                                     key=None)
            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(answers))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            busy = [a for a in answers if a[0] == 503]
            ok = [a for a in answers if a[0] == 200]
            check(len(busy) + len(ok) == len(answers), "statuses %s" % [a[0] for a in answers])
            check(len(busy) >= 1 and len(ok) >= 2, "%d busy, %d served" % (len(busy), len(ok)))
            s, hdrs, b = busy[0]
            check_error(s, b, 503, "server_busy", "full queue")
            check(hdrs.get("Retry-After") == "1", "Retry-After %s" % hdrs.get("Retry-After"))
            texts = {a[2]["choices"][0]["text"] for a in ok}
            check(len(texts) == 1, "served requests differ: %s" % texts)
        finally:
            check(small.stop() == 0, "small server exit code")

    def sigterm_while_busy():
        outs = [None] * 3

        def stream(i):
            code, body = curl(server, server.base + "/v1/completions", "-d",
                              json.dumps({"prompt": "Tom", "stream": True, "seed": i}))
            outs[i] = (code, body)
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        deadline = time.time() + 5
        while time.time() < deadline:
            _, _, h = request(server, "GET", "/health")
            if h["slots_processing"] == 3:
                break
            time.sleep(0.02)
        t0 = time.time()
        code = server.stop()
        check(code == 0, "exit code %s" % code)
        check(time.time() - t0 < 15, "shutdown took %.1f s" % (time.time() - t0))
        for t in threads:
            t.join(10)
        for code, body in outs:
            check(code == 200 and body.rstrip().endswith("data: [DONE]"),
                  "stream cut at shutdown: %s" % body[-200:])
            events = [l[6:] for l in body.splitlines() if l.startswith("data: ")]
            last = json.loads(events[-2])
            # Within the grace a request finishes; past it (a loaded machine) it is cancelled
            # with a clean error event. Either way the stream ends well-formed.
            finished = bool(last.get("choices")) and \
                last["choices"][0]["finish_reason"] in ("stop", "length")
            cancelled = last.get("error", {}).get("code") == "cancelled"
            check(finished or cancelled, "stream ended neither finished nor cancelled: %s"
                  % events[-2][:200])

    for fn in (health_and_headers, chat_nonstream_and_stream, completions_and_seed,
               curl_sse_and_context_end, ollama_ndjson, tokenize_roundtrip,
               concurrency_matches_alone, disconnect_frees_slot, bad_inputs, api_key,
               busy_queue_503, sigterm_while_busy):
        test(fn)
    server.stop()
    passed, failed = results.count(True), results.count(False)
    if failed:
        sys.stdout.write("server stderr:\n" + "".join(server.stderr[-20:]))
    print("total %.1f s" % (time.time() - t_start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
