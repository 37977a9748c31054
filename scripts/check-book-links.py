#!/usr/bin/env python3
"""Fails on broken links in a built mdBook: every relative link in every page must point to a
file of the book, and a `#fragment` to an id in that page. External links (http, https,
mailto) are not fetched.

    python3 scripts/check-book-links.py docs/book
"""
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def parse(path, cache):
    if path not in cache:
        page = Page()
        page.feed(path.read_text(encoding="utf-8"))
        cache[path] = page
    return cache[path]


def main(book):
    root = Path(book).resolve()
    if not (root / "index.html").is_file():
        print(f"{root} is not a built book (no index.html)", file=sys.stderr)
        return 2
    # Pages of the book's own theme (print view, 404) repeat the content or are generated.
    pages = [p for p in root.rglob("*.html") if p.name not in ("print.html", "404.html")]
    cache, broken = {}, []
    for page in pages:
        for href in parse(page, cache).links:
            url = urlsplit(href)
            if url.scheme or href.startswith("//"):
                continue
            target = page if not url.path else (page.parent / unquote(url.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or root not in target.parents and target != root:
                broken.append(f"{page.relative_to(root)}: {href} (no such page)")
            elif url.fragment and target.suffix == ".html":
                if unquote(url.fragment) not in parse(target, cache).ids:
                    broken.append(f"{page.relative_to(root)}: {href} (no such anchor)")
    for line in broken:
        print(line, file=sys.stderr)
    print(f"book links: {len(pages)} pages checked, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/book"))
