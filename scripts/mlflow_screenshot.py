"""Screenshot of the MLflow UI showing a search's parent run with its trials nested under it.

    python scripts/mlflow_screenshot.py --tracking-uri http://127.0.0.1:5000 --search NAME \\
        --out docs/img/mlflow-nested-trials.png

Drives headless Chromium (`apt-get install -y chromium`) over the DevTools protocol (aiohttp's websocket
client, already installed with Ray): opens the search's experiment, expands the parent run so its trial
runs show nested, and saves a PNG. Chromium's debugging port binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

# Click every row expander of the runs table (parent runs start collapsed), then report how many rows show.
# The sidebar's workspace switch (kept in the browser's storage; a fresh profile starts in "GenAI").
TRAINING_VIEW_JS = """
(() => {
  const el = [...document.querySelectorAll('button, label, span, div')].find(e => e.textContent.trim() === 'Model training'
                                                                            && e.children.length === 0);
  if (el) el.click();
  return !!el;
})()
"""
EXPAND_JS = """
(() => {
  document.querySelectorAll('button[aria-label="Close"]').forEach(b => b.click());  // the assistant side panel
  const buttons = [...document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')];
  buttons.forEach(b => b.click());
  return buttons.length;
})()
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("error: no chromium found (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def experiment_url(uri: str, search: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from records import schema as tracking
    from records import writer

    client = writer.client_for(uri)
    parent = tracking.find_parent(client, search)
    if parent is None:
        sys.exit(f"error: no search named '{search}' at {uri}")
    query = urllib.parse.urlencode({"searchFilter": f"tags.`{tracking.SEARCH}` = '{search}'"},
                                   quote_via=urllib.parse.quote)
    return f"{tracking.ui_url(uri, parent.info.experiment_id)}&{query}"  # the training view, this search's runs


async def capture(debug_port: int, url: str, out: Path, settle: float) -> int:
    import aiohttp

    with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=5) as r:
        page = next(t for t in json.load(r) if t["type"] == "page")
    async with aiohttp.ClientSession() as session, session.ws_connect(page["webSocketDebuggerUrl"],
                                                                      max_msg_size=0) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params):
            i = next(ids)
            await ws.send_json({"id": i, "method": method, "params": params})
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == i:
                    return data.get("result", {})
            raise RuntimeError(f"DevTools connection closed during {method}")

        await call("Page.enable")
        await call("Emulation.setDeviceMetricsOverride", width=1600, height=900, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        await asyncio.sleep(settle)
        await call("Runtime.evaluate", expression=TRAINING_VIEW_JS, returnByValue=True)
        await asyncio.sleep(3)
        expanded = (await call("Runtime.evaluate", expression=EXPAND_JS, returnByValue=True))["result"].get("value", 0)
        await asyncio.sleep(2)
        shot = await call("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return int(expanded or 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", required=True, help="an http:// MLflow server")
    ap.add_argument("--search", required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/img/mlflow-nested-trials.png"))
    ap.add_argument("--settle", type=float, default=8.0, help="seconds for the page to render")
    args = ap.parse_args(argv)
    url = experiment_url(args.tracking_uri, args.search)
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
                                    f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                                    f"--user-data-dir={profile}", "--window-size=1600,900", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("error: chromium's DevTools endpoint did not come up")
                    time.sleep(0.3)
            expanded = asyncio.run(capture(port, url, args.out, args.settle))
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
    print(f"{args.out}: {url} ({expanded} parent run(s) expanded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
