#!/usr/bin/env python3
"""Checks the links of the book (docs/src) and of README.md, offline.

- A relative link names a file that exists; a `#anchor` names a heading of
  that file (mdbook's heading ids: lower case, spaces to '-', other
  punctuation dropped).
- Every page under docs/src is reachable from SUMMARY.md, and every page
  SUMMARY.md names exists (mdbook would create a missing one empty).
- `{{#include PATH[:ANCHOR]}}` names a file that exists, and the anchor is
  marked in it (`ANCHOR: name` ... `ANCHOR_END: name`).

- A link into `api/` (the crates' rustdoc, which scripts/api-docs writes into
  the built book) names a workspace crate; with `--api DIR` (after rustdoc
  ran) the page it names must exist in DIR.

Web links are not fetched: CI has no network beyond the package registries.
Exits 1 and lists every broken link.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "docs", "src")
# Where rustdoc's pages land in the built book (docs/book/api/), as a path
# under docs/src: the links are written relative to the source pages.
API = os.path.join(SRC, "api")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
INCLUDE = re.compile(r"\{\{#include\s+([^}\s]+)\s*\}\}")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text):
    """The text outside fenced code blocks and inline code spans."""
    out, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return "\n".join(out)


def slug(heading):
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    out = []
    for ch in text:
        if ch.isalnum() or ch in "_-":
            out.append(ch)
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def heading_ids(path):
    """Heading ids from the raw text (code spans kept, as mdbook does)."""
    ids, seen, fenced = set(), {}, False
    for line in open(path, encoding="utf-8").read().split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if not m:
            continue
        base = slug(m.group(1).replace("`", ""))
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.add(base if n == 0 else f"{base}-{n}")
    return ids


def workspace_crates():
    """The rustdoc names (ember_server) of the workspace's crates."""
    names = set()
    for d in os.listdir(ROOT):
        toml = os.path.join(ROOT, d, "Cargo.toml")
        if os.path.isfile(toml):
            m = re.search(r'^name\s*=\s*"([^"]+)"', open(toml, encoding="utf-8").read(), re.M)
            if m:
                names.add(m.group(1).replace("-", "_"))
    names.add("ember")  # ember-cli's program
    return names


def check_api_link(rel, target, dest, api_dir, errors):
    inside = os.path.relpath(dest, API)
    crate = inside.split(os.sep)[0]
    if crate not in workspace_crates():
        errors.append(f"{rel}: link into api/ names no workspace crate: {target}")
    elif api_dir and not os.path.isfile(os.path.join(api_dir, inside)):
        errors.append(f"{rel}: link to a page rustdoc did not write: {target}")


def check_file(path, errors, api_dir=None):
    text = open(path, encoding="utf-8").read()
    rel = os.path.relpath(path, ROOT)
    for m in LINK.finditer(prose(text)):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith("//"):
            continue
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else os.path.normpath(os.path.join(os.path.dirname(path), file_part))
        if dest.startswith(API + os.sep):
            check_api_link(rel, target, dest, api_dir, errors)
            continue
        if not os.path.exists(dest):
            errors.append(f"{rel}: link to missing {target}")
            continue
        if anchor and dest.endswith(".md") and anchor not in heading_ids(dest):
            errors.append(f"{rel}: link to missing heading {target}")
    for m in INCLUDE.finditer(text):
        file_part, _, anchor = m.group(1).partition(":")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
        if not os.path.isfile(dest):
            errors.append(f"{rel}: include of missing {m.group(1)}")
        elif anchor and not anchor.isdigit():
            body = open(dest, encoding="utf-8").read()
            if f"ANCHOR: {anchor}" not in body or f"ANCHOR_END: {anchor}" not in body:
                errors.append(f"{rel}: include of unmarked anchor {m.group(1)}")


def main():
    api_dir = None
    if len(sys.argv) == 3 and sys.argv[1] == "--api":
        api_dir = sys.argv[2]
    elif len(sys.argv) != 1:
        sys.exit("usage: check-book-links.py [--api DIR]")
    errors = []
    pages = []
    for d, _, files in os.walk(SRC):
        pages += [os.path.join(d, f) for f in files if f.endswith(".md")]
    for p in sorted(pages) + [os.path.join(ROOT, "README.md")]:
        check_file(p, errors, api_dir)
    summary = os.path.join(SRC, "SUMMARY.md")
    listed = {
        os.path.normpath(os.path.join(SRC, t))
        for t in re.findall(r"\]\(([^)#]+\.md)\)", open(summary, encoding="utf-8").read())
    }
    for p in pages:
        if p != summary and p not in listed:
            errors.append(f"{os.path.relpath(p, ROOT)}: not in SUMMARY.md (unreachable in the book)")
    for e in errors:
        print(f"broken: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"links: {len(pages)} pages and README.md checked, none broken")


if __name__ == "__main__":
    main()
