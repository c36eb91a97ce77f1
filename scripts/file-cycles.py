#!/usr/bin/env python3
"""Finds file circles in the Rust workspace: two or more source files that
use each other, directly or around a cycle (issue 24: "no file circles").

Per crate root (src/lib.rs, src/main.rs, src/bin/*.rs) the module tree is
read from `mod NAME;` declarations. In every file, each path that names
something in the crate is an edge to the file of the longest module prefix
of it: `use crate::a::b::{c, d}`, `super::x`, `self::y`, a path through a
child module (`child::f()`) or through a name a `use` brought in (`use
crate::store::{self}`, then `store::images::f`), in `use` lines and in code
alike (inline `mod tests {}` blocks included). Comments and string literals
are skipped. Not edges:
- `mod NAME;` and `pub use` lines: a parent that declares its children and
  re-exports their items is their facade, it does not use them;
- a path into the file's own ancestors (its mod.rs, the crate root): they
  hold what their children share, which is the module tree's shape.
Re-exports are not followed: `crate::Error` is an edge to lib.rs (an
ancestor), not to error.rs. These rules find exactly the five circles
issue 24 measured with `farm-studio look`.

Prints each cycle (a strongly connected set of files) and exits 1 if there
is one. `scripts/file-cycles.py [ROOT]`, ROOT defaulting to the workspace.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(src):
    """The source with comments and string/char literal contents blanked
    (newlines kept so positions stay meaningful)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if src[i] == "\n":
                        out.append("\n")
                    i += 1
            continue
        m = re.match(r'b?r(#*)"', src[i:i + 260])
        if m and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j + 1
            continue
        if c == "'":
            m = re.match(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", src[i:i + 16])
            if m:
                out.append("' '")
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, self}, e as f, g::*}` -> [(segs, name)]: the path of
    each leaf and the name it brings into scope ("*" for a glob)."""
    tree = re.sub(r"\s+as\s+", " as ", tree.strip())
    tree = re.sub(r"\s*(::|,|\{|\})\s*", r"\1", tree)
    out = []

    def split(t):
        parts, depth, cur = [], 0, ""
        for ch in t:
            depth += (ch == "{") - (ch == "}")
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        return [p for p in parts + [cur] if p]

    def walk(prefix, t):
        for p in split(t):
            k = p.find("{")
            if k >= 0:
                head = p[:k].rstrip(":")
                walk(prefix + [s for s in head.split("::") if s], p[k + 1:p.rfind("}")])
                continue
            alias = None
            if " as " in p:
                p, alias = p.split(" as ", 1)
            segs = prefix + [s for s in p.split("::") if s]
            if segs and segs[-1] == "self":
                segs = segs[:-1]
            if not segs:
                continue
            name = alias or segs[-1]
            if segs[-1] == "*":
                segs, name = segs[:-1], "*"
            out.append((segs, name))

    walk([], tree)
    return out


class Crate:
    """One crate root's files, by module path."""

    def __init__(self, root_file):
        self.files = {}  # module path tuple -> file
        self.mod_of = {}  # file -> module path tuple
        self.code = {}  # file -> stripped source
        self._load(root_file, ())

    def _load(self, path, modpath):
        self.files[modpath] = path
        self.mod_of[path] = modpath
        code = strip(open(path, encoding="utf-8").read()).replace("r#", "")
        self.code[path] = code
        base = os.path.dirname(path)
        stem = os.path.basename(path)[:-3]
        if modpath and stem != "mod":
            base = os.path.join(base, stem)
        decl = r"(?m)^[ \t]*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;"
        for m in re.finditer(decl, code):
            name = m.group(1)
            for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                if os.path.exists(cand):
                    self._load(cand, modpath + (name,))
                    break

    def children(self, modpath):
        return {k[-1] for k in self.files if len(k) == len(modpath) + 1 and k[:-1] == modpath}


def inline_scopes(code):
    """(start, end, name) of each inline `mod name { ... }` block."""
    scopes = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += (code[j] == "{") - (code[j] == "}")
            j += 1
        scopes.append((m.start(), j, m.group(1)))
    return scopes


class Resolver:
    """Turns paths written in a file into crate-absolute module paths, and
    those into the file of their longest module prefix."""

    def __init__(self, crate):
        self.crate = crate
        self.imports = {}  # file -> {name: absolute segs}
        self.globs = {}  # file -> [absolute segs]
        for path in crate.mod_of:
            self._imports(path)

    def _imports(self, path):
        crate, code = self.crate, self.crate.code[path]
        modpath = list(crate.mod_of[path])
        scopes = inline_scopes(code)
        names, globs = {}, []
        self.imports[path], self.globs[path] = names, globs
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            if any(s <= m.start() < e for s, e, _ in scopes):
                continue  # an inline module's own imports (tests)
            for segs, name in expand_use(m.group(1)):
                absolute = self.absolute(segs, modpath, path, names)
                if absolute is None:
                    continue
                if name == "*":
                    globs.append(absolute)
                else:
                    names[name] = absolute

    def absolute(self, segs, here, path, names):
        """Crate-absolute segments of `segs` written in module `here` of
        `path`, or None for paths outside the crate."""
        first = segs[0]
        if first == "crate":
            return list(segs[1:])
        if first in ("super", "self"):
            cur, k = list(here), 0
            while k < len(segs) and segs[k] in ("super", "self"):
                if segs[k] == "super":
                    if not cur:
                        return None
                    cur.pop()
                k += 1
            return cur + list(segs[k:])
        if first in names:
            return list(names[first]) + list(segs[1:])
        if first in self.crate.children(tuple(here)):
            return list(here) + list(segs)
        return None

    def land(self, absolute):
        """The file of the longest module prefix of `absolute`."""
        files = self.crate.files
        for k in range(len(absolute), -1, -1):
            key = tuple(absolute[:k])
            if key in files:
                break
        return files[key]


def edges_of(crate, resolver, path):
    """The files `path` uses."""
    modpath = list(crate.mod_of[path])
    code = crate.code[path]
    scopes = inline_scopes(code)
    names = resolver.imports[path]
    deps = set()

    def scope(pos):
        here, local = list(modpath), dict(names)
        for s, e, name in sorted(scopes):
            if s <= pos < e:
                here.append(name)
        return here, local

    for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", code):
        if m.group(1):
            continue  # a re-export: the facade, not a use (see `land`)
        here, local = scope(m.start())
        for segs, _ in expand_use(m.group(2)):
            absolute = resolver.absolute(segs, here, path, local)
            if absolute is not None:
                deps.add(resolver.land(absolute))
    path_re = r"(?<![A-Za-z0-9_:])((?:" + IDENT + r"::)+" + IDENT + r")"
    for m in re.finditer(path_re, code):
        here, local = scope(m.start())
        absolute = resolver.absolute(m.group(1).split("::"), here, path, local)
        if absolute is not None:
            deps.add(resolver.land(absolute))
    deps.discard(path)
    # A module's own ancestors (its mod.rs, the crate root) hold what their
    # children share: using them is the module tree's shape, not a circle.
    for k in range(len(modpath)):
        deps.discard(crate.files.get(tuple(modpath[:k])))
    return deps


def tarjan(graph):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def crate_roots(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "bazel-out") and not d.startswith("bazel-")]
        if "Cargo.toml" in filenames:
            src = os.path.join(dirpath, "src")
            for f in ("lib.rs", "main.rs"):
                if os.path.exists(os.path.join(src, f)):
                    yield os.path.join(src, f)
            bins = os.path.join(src, "bin")
            if os.path.isdir(bins):
                for f in sorted(os.listdir(bins)):
                    if f.endswith(".rs"):
                        yield os.path.join(bins, f)
                    elif os.path.exists(os.path.join(bins, f, "main.rs")):
                        yield os.path.join(bins, f, "main.rs")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, ".."))
    cycles, nfiles = [], 0
    for top in sorted(crate_roots(root)):
        crate = Crate(top)
        resolver = Resolver(crate)
        graph = {f: edges_of(crate, resolver, f) for f in crate.mod_of}
        nfiles += len(graph)
        cycles += tarjan(graph)
    for c in cycles:
        print("file circle: " + " <-> ".join(os.path.relpath(f, root) for f in c))
    if cycles:
        print(f"{len(cycles)} file circle(s) among {nfiles} files")
        return 1
    print(f"no file circles among {nfiles} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
