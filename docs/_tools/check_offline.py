"""Fail when the built site would fetch anything from another host: fonts, scripts, styles, images.

The site must work with the network off (``mkdocs serve`` on a laptop on a train); a CDN font or
script would silently break that. Links a reader may click (``<a href>``) are fine.

Usage: ``python docs/_tools/check_offline.py SITE_DIR``; exit status 1 lists every offender.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Attributes and CSS that make a browser fetch something by itself, when pointed at another host.
FETCHED = [
    re.compile(r"<(?:script|img|iframe|source|audio|video)\b[^>]*\bsrc=[\"']?((?:https?:)?//[^\"' >]+)", re.I),
    re.compile(r"<link\b[^>]*\bhref=[\"']?((?:https?:)?//[^\"' >]+)", re.I),
    re.compile(r"@import\s+(?:url\()?[\"']?((?:https?:)?//[^\"') ;]+)", re.I),
    re.compile(r"url\(\s*[\"']?((?:https?:)?//[^\"') ]+)", re.I),
]


def remote_fetches(site: Path) -> list[str]:
    """``file: address`` for every resource in the built site that lives on another host."""
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix not in (".html", ".css", ".js") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        patterns = FETCHED if path.suffix == ".html" else FETCHED[2:]
        addresses = {address for pattern in patterns for address in pattern.findall(text)
                     if "www.w3.org" not in address}  # SVG namespaces are names, never fetched
        found += [f"{path.relative_to(site)}: {address}" for address in sorted(addresses)]
    return found


def main(site: str) -> int:
    pages = list(Path(site).rglob("*.html"))
    if not pages:
        print(f"no pages under {site}: build the site first (mkdocs build)", file=sys.stderr)
        return 1
    offenders = remote_fetches(Path(site))
    for offender in offenders:
        print(f"fetched from the network: {offender}", file=sys.stderr)
    print(f"{len(pages)} pages, {len(offenders)} resources from other hosts")
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
