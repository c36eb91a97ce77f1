#!/usr/bin/env python3
"""Size breakdown of an unstripped /init (see scripts/size-report).

Reads the ELF with binutils (readelf, nm, objcopy) and writes
size-report.json (every figure) and size-report.md (the tables).

Attribution rules, so the figures can be checked:
- crate: the first path segment of the demangled symbol, after the `<` of an
  impl (`<ember_net::tls::Verifier as ..>::f` is ember_net). Generic code
  from core/alloc instantiated for a crate's type stays with core/alloc
  (`core::ptr::drop_in_place::<ember_init::X>` is core): that is where the
  generic lives, and the "generic instances" table shows who multiplies it.
- core::fmt: functions under core::fmt and every Debug/Display/Write impl.
- panics: core::panicking, slice/str index failures, unwrap/expect failures,
  the allocation-failure paths, and the source-path strings panic locations
  point to (in .rodata).
- folded code: a body that identical code folding gave several names counts
  once, for the first name.
- generic instances: functions whose demangled name differs only in type
  arguments (`::<..>`), grouped; a group with more than one instance costs
  every byte beyond its largest instance ("extra").
- log strings: the literal pieces of every log macro's format string in the
  given sources that occur in the binary's read-only data.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def sections(binary):
    """Allocated sections (name -> bytes) and where each lives in the file."""
    out = {}
    spans = {}
    for line in run("readelf", "-SW", binary).splitlines():
        m = re.match(
            r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
        if not m:
            continue
        name, addr, off, size, flags = m.group(1), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16), m.group(5)
        if "A" in flags and size:
            out[name] = size
            spans[name] = (addr, off, size)
    return out, spans


def symbols(binary):
    """(kind, size, address, demangled name) for every sized symbol."""
    syms = []
    for line in run("nm", "-S", "--size-sort", "--demangle", binary).splitlines():
        parts = line.split(" ", 3)
        if len(parts) != 4:
            continue
        addr, size, kind, name = parts
        syms.append((kind.lower(), int(size, 16), int(addr, 16), name))
    return syms


def strip_generics(name):
    """`a::b::<T>::c::<U>` -> `a::b::c`; impl headers keep their shape."""
    outp, depth, i = [], 0, 0
    while i < len(name):
        if name.startswith("::<", i) and depth == 0:
            j, d = i + 3, 1
            while j < len(name) and d:
                d += {"<": 1, ">": -1}.get(name[j], 0)
                j += 1
            i = j
            continue
        outp.append(name[i])
        i += 1
    return "".join(outp)


def crate_of(name):
    n = name.lstrip("<&*[( ")
    for prefix in ("mut ", "const ", "dyn "):
        if n.startswith(prefix):
            n = n[len(prefix):]
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", n)
    if not m:
        return "[other]"
    c = m.group(1)
    # Primitive types in impl position (`<u8 as ..>`, `<[u8]>::..`, `<str>::..`):
    # the trait's crate, else core (where primitives' inherent methods live).
    if c in {"u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128",
             "isize", "bool", "char", "str", "f32", "f64", "T", "_"}:
        m2 = re.search(r" as ([A-Za-z_][A-Za-z0-9_]*)::", name)
        return m2.group(1) if m2 else "core"
    return c


FMT = re.compile(r"^core::fmt::|as core::fmt::(Debug|Display|Write|LowerHex|UpperHex|Pointer|Binary|Octal)>")
PANIC = re.compile(
    r"^core::panicking::|^core::slice::index::|^core::str::slice_error_fail|^core::result::unwrap_failed"
    r"|^core::option::(unwrap|expect)_failed|^core::option::expect_failed|^alloc::raw_vec::(handle_error|capacity_overflow)"
    r"|^alloc::alloc::handle_alloc_error|^core::cell::panic_already|^rust_begin_unwind|panic_handler|^core::panic::"
    r"|^core::str::.*slice_error|^core::char::.*panic|^core::num::.*overflow_panic")


def rodata_bytes(binary, spans):
    """Read-only data bytes (file image of .rodata and friends)."""
    with open(binary, "rb") as f:
        data = f.read()
    blobs = []
    for name, (_, off, size) in spans.items():
        if name.startswith(".rodata") or name.startswith(".data.rel.ro"):
            blobs.append(data[off:off + size])
    return b"\0".join(blobs)


def source_paths(ro):
    """Bytes of source-path strings (what panic Locations point at)."""
    found = set()
    for m in re.finditer(rb"[A-Za-z0-9_./@+-]{3,}\.rs", ro):
        found.add(m.group(0))
    return sum(len(p) for p in found), len(found)


LOG_CALL = re.compile(r"\b(info|warn|error|debug|trace)!\s*\(")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)


def log_literals(dirs):
    pieces = set()
    for d in dirs:
        for dirpath, _, files in os.walk(d):
            for fn in files:
                if not fn.endswith(".rs"):
                    continue
                text = open(os.path.join(dirpath, fn), encoding="utf-8").read()
                # Test modules are not in the binary.
                cut = text.find("#[cfg(test)]")
                if cut >= 0:
                    text = text[:cut]
                for m in LOG_CALL.finditer(text):
                    i, depth = m.end(), 1
                    while i < len(text) and depth:
                        depth += {"(": 1, ")": -1}.get(text[i], 0)
                        i += 1
                    for s in STRING.finditer(text[m.end():i]):
                        lit = s.group(1).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                        lit = re.sub(r"\\\n\s*", "", lit)
                        for piece in re.split(r"\{[^{}]*\}", lit.replace("{{", "{").replace("}}", "}")):
                            if len(piece) >= 4:
                                pieces.add(piece.encode())
    return pieces


def stripped_size(binary):
    with tempfile.TemporaryDirectory() as t:
        p = os.path.join(t, "s")
        run("objcopy", "--strip-all", binary, p)
        return os.path.getsize(p)


def table(rows, headers):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sources", nargs="*", default=[])
    ap.add_argument("--compare")
    a = ap.parse_args()

    secs, spans = sections(a.binary)
    syms = symbols(a.binary)
    # Identical code folding (lld --icf=all) leaves several names on one
    # body: count each address once, under the first name nm lists.
    funcs, seen = [], set()
    for kind, size, addr, name in syms:
        if kind in ("t", "w") and size and addr not in seen:
            seen.add(addr)
            funcs.append((size, name))
    data = [(size, name) for kind, size, _, name in syms if kind in ("r", "d", "b") and size]
    text_total = secs.get(".text", 0)

    crates = {}
    for size, name in funcs:
        crates[crate_of(name)] = crates.get(crate_of(name), 0) + size
    crate_rows = sorted(crates.items(), key=lambda kv: -kv[1])

    fmt_funcs = [(s, n) for s, n in funcs if FMT.search(n)]
    panic_funcs = [(s, n) for s, n in funcs if PANIC.search(n)]

    groups = {}
    for size, name in funcs:
        g = strip_generics(name)
        groups.setdefault(g, []).append(size)
    generic = []
    for g, sizes in groups.items():
        if len(sizes) > 1:
            generic.append({"function": g, "instances": len(sizes), "bytes": sum(sizes),
                            "extra": sum(sizes) - max(sizes)})
    generic.sort(key=lambda r: -r["extra"])

    ro = rodata_bytes(a.binary, spans)
    path_bytes, path_count = source_paths(ro)
    pieces = log_literals(a.sources)
    log_found = [p for p in pieces if p in ro]
    log_bytes = sum(len(p) for p in log_found)

    report = {
        "binary": a.binary,
        "stripped_bytes": stripped_size(a.binary),
        "sections": secs,
        "text_bytes": text_total,
        "function_bytes": sum(s for s, _ in funcs),
        "crates": [{"crate": c, "bytes": b} for c, b in crate_rows],
        "top_functions": [{"bytes": s, "function": n} for s, n in sorted(funcs, key=lambda r: -r[0])[:40]],
        "top_data": [{"bytes": s, "symbol": n} for s, n in sorted(data, key=lambda r: -r[0])[:15]],
        "costs": {
            "core_fmt": {"functions": len(fmt_funcs), "bytes": sum(s for s, _ in fmt_funcs)},
            "panic_paths": {"functions": len(panic_funcs), "bytes": sum(s for s, _ in panic_funcs)},
            "panic_location_paths": {"strings": path_count, "bytes": path_bytes},
            "generic_instances": {"groups": len(generic), "instances": sum(g["instances"] for g in generic),
                                  "bytes": sum(g["bytes"] for g in generic),
                                  "extra": sum(g["extra"] for g in generic)},
            "log_strings": {"pieces": len(log_found), "bytes": log_bytes},
        },
        "generic_groups": generic[:25],
        "fmt_functions": [{"bytes": s, "function": n} for s, n in sorted(fmt_funcs, key=lambda r: -r[0])[:15]],
    }
    old = None
    if a.compare:
        with open(a.compare) as f:
            old = json.load(f)
        report["compared_with"] = {"file": a.compare, "stripped_bytes": old["stripped_bytes"]}

    md = []
    md.append(f"/init's twin: **{report['stripped_bytes']:,} bytes** once stripped"
              + (f" (was {old['stripped_bytes']:,}: {report['stripped_bytes'] - old['stripped_bytes']:+,})" if old else ""))
    md.append("")
    md.append(table([(k, f"{v:,}") for k, v in sorted(secs.items(), key=lambda kv: -kv[1])], ["section", "bytes"]))
    md.append("")
    c = report["costs"]
    md.append(table([
        ("core::fmt (functions, incl. Debug/Display impls)", f"{c['core_fmt']['bytes']:,}", c["core_fmt"]["functions"]),
        ("panic / bounds-check / unwrap paths (functions)", f"{c['panic_paths']['bytes']:,}", c["panic_paths"]["functions"]),
        ("panic location source paths (.rodata strings)", f"{c['panic_location_paths']['bytes']:,}", c["panic_location_paths"]["strings"]),
        ("generic functions with >1 instance (all instances)", f"{c['generic_instances']['bytes']:,}", c["generic_instances"]["instances"]),
        ("… of which beyond the largest instance of each", f"{c['generic_instances']['extra']:,}", c["generic_instances"]["groups"]),
        ("log format strings (literal pieces found)", f"{c['log_strings']['bytes']:,}", c["log_strings"]["pieces"]),
    ], ["cost", "bytes", "count"]))
    md.append("")
    old_crates = {r["crate"]: r["bytes"] for r in old["crates"]} if old else {}
    rows = []
    for name, b in crate_rows:
        pct = f"{100 * b / max(report['function_bytes'], 1):.1f}%"
        row = [name, f"{b:,}", pct]
        if old:
            row.append(f"{b - old_crates.get(name, 0):+,}")
        rows.append(row)
    if old:
        for name, b in old_crates.items():
            if name not in crates:
                rows.append([name, "0", "0.0%", f"{-b:+,}"])
    md.append(table(rows, ["crate", "function bytes", "share"] + (["delta"] if old else [])))
    md.append("")
    md.append(table([(f"{r['bytes']:,}", "`" + r["function"][:110] + "`") for r in report["top_functions"]],
                    ["bytes", "top 40 functions"]))
    md.append("")
    md.append(table([(f"{g['extra']:,}", g["instances"], f"{g['bytes']:,}", "`" + g["function"][:100] + "`")
                     for g in generic[:15]], ["extra", "instances", "bytes", "generic function"]))
    md.append("")
    md.append(table([(f"{r['bytes']:,}", "`" + r["symbol"][:100] + "`") for r in report["top_data"]],
                    ["bytes", "largest data symbols"]))
    text = "\n".join(md) + "\n"

    with open(os.path.join(a.out, "size-report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(a.out, "size-report.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
