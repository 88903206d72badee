#!/usr/bin/env python3
"""The chat page of `lockstep serve` (GET /) in a real browser: headless Chromium (Debian
`chromium`) loads it against a server on stories260K, a message is typed and sent, and the test
checks, in the DOM, the streamed reply (the same text the API gives for the same request), the
backend badge and the parity verdict badge. A screenshot is kept in the test's temp dir (its path
is printed).

Usage (from the repository root, as ctest runs it):
    python3 tests/server/chat_page_test.py PATH/TO/lockstep

Drives Chromium over the DevTools protocol with the `websockets` package, installed into
build/browser-venv on first use. Fails (does not skip) when ../shared or chromium is missing.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

VENV = "build/browser-venv"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verified_serving_test import MODEL, Server, check, request  # noqa: E402


def ensure_venv():
    if os.environ.get("LOCKSTEP_BROWSER_TEST_VENV") == "1":
        return
    py = os.path.join(VENV, "bin", "python")
    have = os.path.exists(py) and subprocess.run(
        [py, "-c", "import websockets.sync.client"], capture_output=True).returncode == 0
    if not have:
        print("setting up %s with the websockets package" % VENV, flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "websockets"],
                       check=True)
    os.execve(py, [py] + sys.argv, dict(os.environ, LOCKSTEP_BROWSER_TEST_VENV="1"))


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, chromium, profile):
        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", "--user-data-dir=" + profile,
             "--window-size=1000,800", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while time.time() < deadline and not os.path.exists(port_file):
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited: " + self.proc.stderr.read())
            time.sleep(0.1)
        time.sleep(0.2)
        port = int(open(port_file).read().split()[0])
        pages = []
        while time.time() < deadline and not pages:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            time.sleep(0.1)
        check(pages, "chromium has no page")
        from websockets.sync.client import connect  # noqa: E402 (installed by ensure_venv)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None,
                          open_timeout=30).__enter__()
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                check("error" not in msg, "%s: %s" % (method, msg.get("error")))
                return msg["result"]

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        check("exceptionDetails" not in r, "js %s: %s" % (expression, r.get("exceptionDetails")))
        return r["result"].get("value")

    def wait_js(self, what, expression, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expression)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError("timed out waiting for " + what)

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait()


def main():
    if len(sys.argv) != 2:
        print("usage: chat_page_test.py PATH/TO/lockstep", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    for missing, what in ((not os.path.exists(MODEL), MODEL + " (../shared beside the checkout)"),
                          (not chromium, "chromium (scripts/install-deps.sh installs it)")):
        if missing:
            print("FAIL: %s is missing" % what)
            print("0 passed, 1 failed")
            return 1
    ensure_venv()
    tmp = tempfile.mkdtemp(prefix="lockstep-chat-page-")
    server = Server(binary, "--parallel", "2", "--audit-rate", "1")
    browser = None
    ok = False
    try:
        status, hdrs, page = request(server, "GET", "/")
        check(status == 200 and hdrs["Content-Type"].startswith("text/html"), "GET / %s" % status)
        check("src=\"http" not in page and "href=\"http" not in page, "the page loads nothing "
              "from outside")
        message = "Tell me a story about a cat"
        # What the API answers for the same conversation, greedy: the page must show exactly it.
        status, _, want = request(server, "POST", "/v1/chat/completions", {
            "messages": [{"role": "user", "content": message}], "max_tokens": 48,
            "temperature": 0})
        check(status == 200, "API %s" % want)
        want_text = want["choices"][0]["message"]["content"]
        check(want_text.strip(), "empty API answer")

        browser = Browser(chromium, os.path.join(tmp, "profile"))
        browser.call("Page.enable")
        browser.call("Page.navigate", url=server.base + "/")
        browser.wait_js("the page", "document.readyState === 'complete' && !!document.getElementById('verdict')")
        browser.wait_js("the verdict badge",
                        "document.getElementById('verdict').dataset.status !== 'pending'")
        browser.js("""(() => {
            document.getElementById('max').value = '48';
            document.getElementById('temp').value = '0';
            document.getElementById('input').value = %s;
            document.getElementById('form').requestSubmit();
            return true; })()""" % json.dumps(message))
        browser.wait_js("the streamed reply",
                        "(document.querySelector('.msg.assistant') || {dataset: {}}).dataset.done === '1'")
        dom = browser.js("""(() => {
            const a = document.querySelector('.msg.assistant');
            return {reply: a.querySelector('.text').textContent, error: a.classList.contains('error'),
                    user: document.querySelector('.msg.user').textContent,
                    meta: (a.querySelector('.meta') || {}).textContent || '',
                    verdict: document.getElementById('verdict').textContent,
                    status: document.getElementById('verdict').dataset.status,
                    state: document.getElementById('verdict').dataset.state,
                    backend: document.getElementById('backend').textContent,
                    tps: document.getElementById('tps').textContent}; })()""")
        shot = browser.call("Page.captureScreenshot", format="png")
        path = os.path.join(tmp, "chat_page.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print("screenshot: " + path)
        print("DOM: " + json.dumps(dom))
        check(not dom["error"], "the reply is an error: %s" % dom["reply"])
        check(dom["user"] == message, "user bubble %r" % dom["user"])
        check(dom["reply"] == want_text, "streamed reply %r != API %r" % (dom["reply"], want_text))
        check(dom["status"] == "passed" and dom["verdict"].startswith("parity passed"),
              "verdict badge %r" % dom["verdict"])
        check(dom["backend"] == "backend cpu", "backend badge %r" % dom["backend"])
        check(dom["tps"].endswith("tokens/s") and float(dom["tps"].split()[0]) > 0,
              "tokens/s badge %r" % dom["tps"])
        check("tokens" in dom["meta"], "meta %r" % dom["meta"])
        ok = True
    except Exception as e:
        print("FAIL chat_page: %s: %s" % (type(e).__name__, e), flush=True)
    finally:
        if browser:
            browser.close()
        server.stop()
    print("PASS chat_page" if ok else "server log:\n" + server.log())
    print("%d passed, %d failed" % (int(ok), int(not ok)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
