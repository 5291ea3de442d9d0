#!/usr/bin/env python3
"""The browser test: serves web/ on 127.0.0.1, drives headless Chromium through
chromedriver (WebDriver, standard library only) and checks the page's own test
(web/app.js with ?test=1):

  (a) the WebGPU backend is created in the page (the adapter is reported),
  (b) one LeNet-5 training step on WebGPU agrees with the CPU executor in the same wasm
      module: logits, loss, every gradient, every updated parameter (atol 1e-4, rtol 2e-3),
  (c) 200 WebGPU training steps reach >= 80 % on the 2,000 test digits,
  (d) a screenshot of the page after training -> docs/images/web.png (--screenshot);
      also a drawn "1" gets a prediction and the model download is safetensors naming
      every LeNet-5 parameter.

Then, with WebGPU disabled (--disable-features=WebGPU), the page must say so plainly
and offer the CPU path (no blank page, no uncaught exception), which must train (20 steps
on the CPU executor compiled to wasm, then the test accuracy).

Usage: scripts/web_test.py [--screenshot PATH] [--timeout SECONDS] [--json PATH]
Exit status 0 only when every check passed. Needs web/pkg (scripts/web.sh),
chromium and chromium-driver (Debian packages of those names).
"""

import argparse
import base64
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB = os.path.join(ROOT, "web")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(directory):
    """A static server for `directory` on 127.0.0.1 (a thread); returns its base URL."""
    handler = functools.partial(QuietHandler, directory=directory)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


class WebDriver:
    """The few WebDriver commands the test needs, over chromedriver's HTTP API."""

    def __init__(self, driver, browser, args):
        self.port = free_port()
        self.proc = subprocess.Popen([driver, f"--port={self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                self.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}}
        self.sid = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}") from None

    def session(self, method, path, body=None):
        return self.call(method, f"/session/{self.sid}{path}", body)

    def get(self, url):
        self.session("POST", "/url", {"url": url})

    def js(self, script):
        return self.session("POST", "/execute/sync", {"script": script, "args": []})

    def screenshot(self, path):
        png = base64.b64decode(self.session("GET", "/screenshot"))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)

    def console(self):
        try:
            return self.session("POST", "/se/log", {"type": "browser"}) or []
        except Exception:  # not every chromedriver keeps the log
            return []

    def quit(self):
        try:
            self.session("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def find(*names):
    for n in names:
        p = shutil.which(n) or (n if os.path.exists(n) else None)
        if p:
            return p
    sys.exit(f"none of {names} found: apt-get install chromium chromium-driver")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--screenshot", default=os.path.join(ROOT, "docs/images/web.png"))
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--json", help="write the page's test result here")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(WEB, "pkg", "wgcnn_web_bg.wasm")):
        sys.exit("web/pkg is missing: run scripts/web.sh first")
    driver = find("chromedriver", "/usr/bin/chromedriver")
    browser = find("/usr/lib/chromium/chromium", "chromium", "google-chrome")
    url = serve(WEB)
    common = ["--headless=new", "--no-sandbox", "--window-size=1000,900",
              "--disable-dev-shm-usage"]
    failures = []

    # ---- WebGPU: the page's own test -----------------------------------------------------
    wd = WebDriver(driver, browser, common + ["--enable-unsafe-webgpu"])
    t0 = time.time()
    try:
        wd.get(url + "/index.html?test=1")
        result = None
        shown = ""
        while time.time() - t0 < a.timeout:
            result = wd.js("return window.__wgcnnTest || null")
            if result and result.get("done"):
                break
            now = wd.js("return document.getElementById('env').textContent + ' | ' + "
                        "document.getElementById('speed').textContent")
            if now != shown:
                print(f"[{time.time() - t0:5.0f} s] {now}", flush=True)
                shown = now
            time.sleep(1)
        else:
            failures.append(f"the page's test did not finish in {a.timeout:.0f} s: {result}")
        log = wd.js("return document.getElementById('log').textContent")
        print(log)
        if a.screenshot:
            wd.screenshot(a.screenshot)
            print(f"screenshot: {a.screenshot}")
        for entry in wd.console():
            if entry.get("level") == "SEVERE":
                print(f"console: {entry.get('message')}")
    finally:
        wd.quit()
    result = result or {}
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    env = result.get("env") or {}
    cmp = result.get("compare") or {}
    print(f"(a) WebGPU adapter: {env.get('name')} (fallback: {env.get('fallback')}); "
          f"wgcnn: {result.get('adapter') or cmp.get('adapter')}")
    if not env.get("ok"):
        failures.append(f"(a) no WebGPU in the page: {env.get('why')}")
    print(f"(b) one step GPU vs CPU: ok={cmp.get('ok')}, loss cpu {cmp.get('loss_cpu')} "
          f"gpu {cmp.get('loss_gpu')}, {len(cmp.get('checks', []))} tensors compared")
    for c in cmp.get("checks", []):
        print(f"      {c['what']:<16} max |diff| {c['max_abs_diff']:.3e}  "
              f"{'ok' if c['ok'] else 'MISMATCH'}")
    if not cmp.get("ok"):
        failures.append("(b) WebGPU and the CPU executor disagree (or the comparison failed)")
    acc = result.get("accuracy")
    ips = result.get("imagesPerSec")
    print(f"(c) 200 steps: test accuracy {acc if acc is None else f'{100 * acc:.2f} %'}, "
          f"{ips if ips is None else f'{ips:.0f}'} images/s")
    if acc is None or acc < 0.8:
        failures.append(f"(c) test accuracy {acc} < 0.80")
    st = result.get("safetensors") or {}
    want = sorted(f"{l}.{p}" for l in ["c1", "c3", "f5", "f6", "f7"] for p in ["weight", "bias"])
    print(f"    drawn digit predicted as {result.get('prediction')!r}; safetensors download: "
          f"{st.get('bytes')} bytes, tensors {st.get('tensors')}")
    if st.get("tensors") != want:
        failures.append(f"the safetensors download names {st.get('tensors')}, expected {want}")
    if not str(result.get("prediction", "")).isdigit():
        failures.append(f"no prediction for the drawn digit: {result.get('prediction')!r}")
    if result.get("error"):
        failures.append(f"page error: {result['error']}")

    # ---- no WebGPU: the page must say so and offer the CPU path --------------------------
    wd = WebDriver(driver, browser, common + ["--disable-features=WebGPU,Vulkan",
                                              "--disable-gpu"])
    try:
        wd.get(url + "/index.html")
        state = None
        t1 = time.time()
        while time.time() - t1 < 30:
            state = wd.js("""const e = document.getElementById('env');
                return {text: e.textContent, bad: e.className === 'bad', gpu: 'gpu' in navigator,
                        cpu: !document.getElementById('train-cpu').disabled};""")
            if state and not state["text"].startswith("checking"):
                break
            time.sleep(0.5)
        # the CPU reference path offered there: 20 steps and the test accuracy
        cpu = None
        if state and state["cpu"]:
            wd.js("document.getElementById('steps').value = 20; "
                  "document.getElementById('train-cpu').click();")
            t2 = time.time()
            while time.time() - t2 < 150:
                cpu = wd.js("return [document.getElementById('test-acc').textContent, "
                            "document.getElementById('speed').textContent, "
                            "document.getElementById('log').textContent]")
                if cpu[0] != "—" or "error" in cpu[2]:
                    break
                time.sleep(1)
    finally:
        wd.quit()
    print(f"(e) without WebGPU (navigator.gpu: {state and state['gpu']}): {state and state['text']!r}")
    if not state or state["text"].startswith("checking"):
        failures.append("(e) the page without WebGPU never reported its state")
    elif not (state["bad"] and state["cpu"] and "CPU reference path" in state["text"]):
        failures.append("(e) without WebGPU the page must say so and offer the CPU path")
    print(f"    CPU path there, 20 steps: test accuracy {cpu and cpu[0]}; {cpu and cpu[1]}")
    if not cpu or cpu[0] == "—":
        failures.append(f"(e) the CPU path did not train: {cpu}")

    print(f"browser test: {time.time() - t0:.0f} s")
    if failures:
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        sys.exit(1)
    print("browser test: all checks passed")


if __name__ == "__main__":
    main()
