"""Look at the built site as a reader would: headless Chromium, screenshots, and every request.

Serves SITE_DIR on localhost (or takes the address of a running ``mkdocs serve``), opens each page in Chromium through Playwright, writes a full-page
PNG per page into OUT_DIR, and lists every request that went to another host and every console
error. Run it with the network off to prove the site needs none:

    unshare -rn sh -c 'ip link set lo up && python docs/_tools/screenshots.py site shots'
    python docs/_tools/screenshots.py http://127.0.0.1:8000/ shots      # against mkdocs serve

Needs ``pip install playwright`` and a Chromium (Debian's ``chromium`` package is used as it is;
Playwright downloads no browser). Exit status 1 when a page fetched from another host, logged an
error or failed to load.
"""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

PAGES = {"home": "", "method": "methods/pixel-vp/", "api": "reference/api/", "cli": "reference/cli/",
         "results": "results/", "search": "?q=label+mapping"}
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Requests are checked in the browser; the server's access log is noise."""


def serve(site: Path) -> http.server.ThreadingHTTPServer:
    """The site on a free localhost port, served from a background thread."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(site: str, out: str) -> int:
    """Screenshot every page of ``site`` (a folder or an address) into ``out``; 1 on any problem."""
    Path(out).mkdir(parents=True, exist_ok=True)
    server = None if site.startswith("http") else serve(Path(site))
    base = site if server is None else f"http://127.0.0.1:{server.server_address[1]}/"
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: urlparse(r.url).hostname not in ("127.0.0.1", None)
                and problems.append(f"request to another host: {r.url}"))
        page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
        for name, path in PAGES.items():
            response = page.goto(base + path, wait_until="load")  # not networkidle: mkdocs serve long-polls for reloads
            if response is None or not response.ok:
                problems.append(f"{name}: {base + path} did not load")
            if name == "search":
                page.wait_for_timeout(1500)  # the search index loads in a worker
            page.screenshot(path=f"{out}/{name}.png", full_page=name not in ("api", "cli", "results"))
            print(f"{name}: {page.title()!r} -> {out}/{name}.png")
        browser.close()
    if server is not None:
        server.shutdown()
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(PAGES)} pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
