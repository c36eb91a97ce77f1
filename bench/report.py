#!/usr/bin/env python3
"""Aggregates one qemu/bench run into bench.json and bench.md, and draws
the median boot of each kind with `ember timeline`. Inputs are the files
qemu/bench left under OUT: logs/<kind>-<n>.json (the parsed timelines),
logs/<kind>-<n>.run.json (exit status, wall time), build/*.txt (initrd
reports), size/size-report.json (scripts/size-report)."""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess

KINDS = ("ember", "baseline")
# The production-shaped workload's boots (qemu/bench --prod-boots).
PROD_KINDS = ("prod-ember", "prod-baseline")
# Its instants, in boot order: the stand-in runtime's marks.
PROD_MARKS = ("runtime-started", "containerd-ready", "image-imported", "container-running")
# The ceiling scripts/build-init enforces (keep the two in step).
BUDGET = int(next(l for l in open(os.path.join(os.path.dirname(__file__), "..", "scripts", "init-ceiling"))
                  if l.strip() and not l.startswith("#")))


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "median": round(statistics.median(values)),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def milestones(t):
    """Instants of one boot, in ms since the kernel started, in the order
    they are reported: kernel handover, /init's first line, each phase's
    successful end, then named marks."""
    m = {}
    if t.get("handover_ms") is not None:
        m["kernel → /init"] = t["handover_ms"]
    if t.get("init_started_ms") is not None:
        m["/init first line"] = t["init_started_ms"]
    for p in t.get("phases", []):
        if p["status"] == "ok":
            m[f"{p['name']} done"] = p["end_ms"]
    for mark in t.get("marks", []):
        if mark["name"] != "init started":
            m[mark["name"]] = mark["at_ms"]
    return m


def initrd_report(path):
    text = open(path).read() if os.path.exists(path) else ""
    m = re.search(r"(\d+) entries, (\d+) bytes \((\d+) uncompressed\)", text)
    if not m:
        return None
    return {"entries": int(m[1]), "gzip_bytes": int(m[2]), "uncompressed_bytes": int(m[3])}


def serial_facts(path):
    """What the timeline does not carry, read from one serial log: the
    kernel's initramfs unpacking (from "Trying to unpack" to "Freeing
    initrd memory")."""
    facts = {}
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return facts
    start = re.search(r"\[\s*(\d+\.\d+)\] Trying to unpack rootfs image", text)
    end = re.search(r"\[\s*(\d+\.\d+)\] Freeing initrd memory", text)
    if start and end:
        facts["kernel_initrd_unpack_ms"] = round((float(end[1]) - float(start[1])) * 1000)
    return facts


def environment(a):
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    commit = sh("git", "rev-parse", "--short=12", "HEAD")
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host_cpu": cpu,
        "host_cores": os.cpu_count(),
        "host_mem_mib": mem_kb // 1024,
        "host_kernel": platform.release(),
        "host_os": sh("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "qemu": sh("qemu-system-x86_64", "--version").splitlines()[0] if sh("qemu-system-x86_64", "--version") else "",
        "accel": os.environ.get("EMBER_ACCEL", "tcg"),
        "guest_kernel": a.kernel_release,
        "guest_mem_mib": 1024,
        "guest_cpus": 1,
        "rustc": sh("rustc", "-V"),
        "busybox": (sh("/bin/busybox").splitlines() or [""])[0],
        "git_commit": commit,
        "bench_wall_s": a.elapsed_s,
    }


def sizes(a, out):
    s = {"init_stripped_bytes": os.path.getsize(a.init), "init_budget_bytes": BUDGET}
    s["ember_initrd"] = initrd_report(f"{out}/build/ember-initrd.txt")
    s["baseline_initrd"] = initrd_report(f"{out}/build/baseline-initrd.txt")
    for kind in PROD_KINDS:
        s[kind.replace("-", "_") + "_initrd"] = initrd_report(f"{out}/build/{kind}-initrd.txt")
    hello = f"{out}/build/hello-glibc-std"
    s["anchors"] = {
        "busybox_static_bytes": os.path.getsize("/bin/busybox") if os.path.exists("/bin/busybox") else None,
        "glibc_std_hello_static_stripped_bytes": os.path.getsize(hello) if os.path.exists(hello) else None,
        "no_std_origin_rustix_hello_bytes": 5912,
        "no_std_origin_rustix_hello_note": "quoted from the issue (measured on this machine type), not rebuilt by the bench",
        "issue_busybox_static_bytes": 1982256,
        "issue_glibc_std_hello_bytes": 1120512,
    }
    rep = load(f"{out}/size/size-report.json")
    if rep:
        fb = rep["function_bytes"] or 1
        s["init_text_section_bytes"] = rep["text_bytes"]
        s["init_function_bytes"] = rep["function_bytes"]
        s["init_crates"] = [
            {"crate": c["crate"], "text_bytes": c["bytes"], "share_of_text": round(c["bytes"] / fb, 4)}
            for c in rep["crates"]
        ]
        s["init_costs"] = rep["costs"]
        s["init_top_functions"] = rep["top_functions"][:10]
        s["init_crates_note"] = (
            "scripts/size-report on an unstripped twin (same profile, symbols kept, v0 mangling): "
            "function bytes per crate from demangled symbol names; with LTO and opt-level=z, code "
            "inlined into a caller counts for the caller's crate (see out/size/size-report.md)"
        )
    else:
        s["init_crates"] = None
        s["init_crates_note"] = "scripts/size-report did not run (see build/size-report.err)"
    return s


def boots(out, counts):
    result = {}
    for kind, n in counts.items():
        runs = []
        for i in range(1, n + 1):
            run = load(f"{out}/logs/{kind}-{i}.run.json", {}) or {}
            t = load(f"{out}/logs/{kind}-{i}.json", {}) or {}
            runs.append({
                "n": i,
                "exit": run.get("exit"),
                "wall_ms": run.get("wall_ms"),
                "server_cpu_ms": run.get("server_cpu_ms"),
                "load_avg_1m": run.get("load_avg_1m"),
                "timeline": t,
                "milestones": milestones(t) if t else {},
                "serial": serial_facts(f"{out}/logs/{kind}-{i}.log"),
            })
        result[kind] = runs
    return result


def aggregate(runs):
    names = []
    for r in runs:
        for k in r["milestones"]:
            if k not in names:
                names.append(k)
    ms = {k: stats([r["milestones"].get(k) for r in runs]) for k in names}
    phases = {}
    for r in runs:
        for p in r["timeline"].get("phases", []):
            phases.setdefault(p["name"], {"took": [], "cpu": [], "failed": 0})
            if p["status"] == "ok":
                phases[p["name"]]["took"].append(p["took_ms"])
                phases[p["name"]]["cpu"].append(p.get("cpu_ms"))
            else:
                phases[p["name"]]["failed"] += 1
    phase_stats = {
        name: dict(stats(v["took"]) or {"n": 0}, failed_or_unfinished=v["failed"],
                   cpu_ms=stats(v["cpu"]))
        for name, v in phases.items()
    }
    metrics = {}
    for r in runs:
        for k, v in list(r["timeline"].get("metrics", {}).items()) + list(r.get("serial", {}).items()):
            metrics.setdefault(k, []).append(v)
    return {
        "powered_off": sum(1 for r in runs if r["exit"] == 0),
        "boots": len(runs),
        "wall_ms": stats([r["wall_ms"] for r in runs]),
        "server_cpu_ms": stats([r.get("server_cpu_ms") for r in runs]),
        "load_avg_1m": [r.get("load_avg_1m") for r in runs],
        "milestones": ms,
        "phases": phase_stats,
        "metrics": {k: stats(v) for k, v in metrics.items()},
    }


def median_boot(runs):
    good = [r for r in runs if r["exit"] == 0 and r["timeline"]]
    if not good:
        good = [r for r in runs if r["timeline"]]
    if not good:
        return None
    good.sort(key=lambda r: r["timeline"].get("end_ms", 0))
    return good[(len(good) - 1) // 2]


def fmt(v):
    return "—" if v is None else f"{v:,}"


def cell(s):
    if not s:
        return "—"
    if s["n"] == 1:
        return f"{s['median']:,}"
    return f"{s['median']:,} ({s['min']:,}–{s['max']:,})"


def ratio(e, b):
    if not e or not b or not b["median"]:
        return "—"
    return f"{e['median'] / b['median']:.2f}"


def markdown(report):
    env = report["environment"]
    s = report["size"]
    agg = report["boot"]
    lines = []
    w = lines.append
    w(f"Measured {env['date_utc']} on {env['host_cpu']} ({env['host_cores']} cores, {env['host_os']}), "
      f"{env['qemu']}, accel {env['accel']}, guest kernel {env['guest_kernel']}, "
      f"{env['guest_cpus']} vCPU / {env['guest_mem_mib']} MiB, commit {env['git_commit']}; "
      f"{report['config']['boots']} boots of each, interleaved; overlay "
      f"{fmt(report['config']['overlay_bytes'])} bytes gzip (the baseline's; Ember's sealed in "
      f"{report['config']['overlay_compress'][0]}). Command: `qemu/bench`.")
    w("")
    w("**Size**")
    w("")
    w("| Artifact | Bytes | Note |")
    w("|---|---:|---|")
    init = s["init_stripped_bytes"]
    w(f"| Ember /init (static, no libc, stripped) | {init:,} | {100 * init / BUDGET:.1f}% of the {BUDGET:,}-byte ceiling |")
    for key, label in (("ember_initrd", "Ember minimal initrd (init, modules, CA)"),
                       ("baseline_initrd", "Baseline initrd (busybox, script, same modules)")):
        r = s.get(key)
        if r:
            w(f"| {label}, compressed | {r['gzip_bytes']:,} | {r['entries']} entries (`ember initrd build`'s default) |")
            w(f"| {label}, uncompressed | {r['uncompressed_bytes']:,} | |")
    a = s["anchors"]
    w(f"| busybox-static (anchor) | {fmt(a['busybox_static_bytes'])} | this machine's /bin/busybox |")
    w(f"| static glibc + std Rust hello (anchor) | {fmt(a['glibc_std_hello_static_stripped_bytes'])} | built by the bench |")
    w(f"| no_std origin + rustix hello (anchor) | {a['no_std_origin_rustix_hello_bytes']:,} | quoted from the issue |")
    w("")
    if s.get("init_crates"):
        w(f"**What /init is made of** (`scripts/size-report`, function bytes "
          f"{s['init_function_bytes']:,} of .text {s['init_text_section_bytes']:,})")
        w("")
        w("| Crate | Function bytes | Share |")
        w("|---|---:|---:|")
        rest = 0
        for i, c in enumerate(s["init_crates"]):
            if i < 12:
                w(f"| {c['crate']} | {c['text_bytes']:,} | {100 * c['share_of_text']:.1f}% |")
            else:
                rest += c["text_bytes"]
        if rest:
            w(f"| {len(s['init_crates']) - 12} more crates | {rest:,} | {100 * rest / s['init_function_bytes']:.1f}% |")
        w("")
        c = s["init_costs"]
        w("| Cost inside /init | Bytes |")
        w("|---|---:|")
        w(f"| core::fmt ({c['core_fmt']['functions']} functions incl. Debug/Display impls) | {c['core_fmt']['bytes']:,} |")
        w(f"| panic, bounds-check and unwrap paths | {c['panic_paths']['bytes']:,} |")
        w(f"| panic locations' source paths (.rodata) | {c['panic_location_paths']['bytes']:,} |")
        w(f"| generic instances beyond the largest of each ({c['generic_instances']['groups']} functions) | {c['generic_instances']['extra']:,} |")
        w(f"| log format strings | {c['log_strings']['bytes']:,} |")
        w("")
    e, b = agg["ember"], agg["baseline"]
    w("**Boot time**, ms since the kernel started: median (min–max)")
    w("")
    w("| Instant | Ember | Baseline | Ember/baseline |")
    w("|---|---:|---:|---:|")
    names = list(e["milestones"])
    names += [k for k in b["milestones"] if k not in names]
    def order(k):
        v = (e["milestones"].get(k) or b["milestones"].get(k) or {"median": 0})["median"]
        return v
    for k in sorted(names, key=order):
        em, bm = e["milestones"].get(k), b["milestones"].get(k)
        w(f"| {k} | {cell(em)} | {cell(bm)} | {ratio(em, bm)} |")
    w(f"| wall time per boot (host) | {cell(e['wall_ms'])} | {cell(b['wall_ms'])} | {ratio(e['wall_ms'], b['wall_ms'])} |")
    w("")
    w("**Phase durations**, ms (the `took=` each writer logged): median (min–max). "
      "*Ember CPU* is the init's own CPU time in the phase (`cpu=`, CLOCK_PROCESS_CPUTIME_ID): "
      "the rest of the phase is waiting on the network, the TPM, the kernel or a child.")
    w("")
    w("| Phase | Ember | Ember CPU | Baseline | Ember/baseline |")
    w("|---|---:|---:|---:|---:|")
    pn = list(e["phases"]) + [k for k in b["phases"] if k not in e["phases"]]
    for k in pn:
        ep, bp = e["phases"].get(k), b["phases"].get(k)
        def pc(p):
            if not p:
                return "—"
            c = cell(p if p.get("n") else None)
            if p.get("failed_or_unfinished"):
                c += f" ({p['failed_or_unfinished']} failed)"
            return c
        cpu = cell(ep.get("cpu_ms")) if ep else "—"
        w(f"| {k} | {pc(ep)} | {cpu} | {pc(bp)} | {ratio(ep if ep and ep.get('n') else None, bp if bp and bp.get('n') else None)} |")
    w("")
    r = report["resources"]
    w("**PID 1's own resources and TPM cost**")
    w("")
    big = report.get("big_overlay")
    big_head = f" Ember, {big['fill_mb']} MB overlay |" if big else ""
    w(f"| Figure | Ember, {report['config']['overlay_mb']} MB overlay |{big_head} Baseline | Note |")
    w("|---|---:|" + ("---:|" if big else "") + "---:|---|")
    for key, label in (("pid1_vmhwm_kb", "peak RSS of PID 1 (VmHWM, KiB)"),
                       ("pid1_cpu_ms", "CPU time of PID 1 + reaped children (ms)"),
                       ("mem_used_kb", "node RAM in use after boot (MemTotal − MemAvailable, KiB)")):
        big_cell = f" {fmt(big['metrics'].get(key))} |" if big else ""
        w(f"| {label} | {cell(r['ember'].get(key))} |{big_cell} {cell(r['baseline'].get(key))} | {r['notes'][key]} |")
    if big:
        for name in ("overlay", "storage", "ready"):
            p = big["phases"].get(name) or {}
            w(f"| `{name}` phase: took / CPU (ms) | {cell(agg['ember']['phases'].get(name))} / "
              f"{cell((agg['ember']['phases'].get(name) or {}).get('cpu_ms'))} | "
              f"{fmt(p.get('took_ms'))} / {fmt(p.get('cpu_ms'))} | n/a | |")
    t = report["tpm"]
    w(f"| TPM commands during attestation | {fmt(t['commands'])} | n/a | {t['note']} |")
    w(f"| TPM time during attestation (ms) | {fmt(t['time_ms'])} | n/a | |")
    w("")
    # The overlay phase by stage, from /init's `metrics: overlay_*` line.
    stages = (("overlay_receive_ms", "receive: socket + TLS"),
              ("overlay_open_ms", "open: ChaCha20-Poly1305 (one pass, no SHA-256)"),
              ("overlay_unpack_ms", "unpack: decompress (as the manifest says) + tar"),
              ("overlay_write_ms", "write: files into tmpfs"))
    em = agg["ember"]["metrics"]
    if any(em.get(k) for k, _ in stages):
        w("**Where the overlay phase's CPU goes** (median ms; `metrics: overlay_*` from /init)")
        w("")
        w(f"| Stage | Ember, {report['config']['overlay_mb']} MB overlay |" + (f" Ember, {big['fill_mb']} MB overlay |" if big else ""))
        w("|---|---:|" + ("---:|" if big else ""))
        for key, label in stages:
            big_cell = f" {fmt(big['metrics'].get(key))} |" if big else ""
            w(f"| {label} | {cell(em.get(key))} |{big_cell}")
        w("")
    comp = report.get("overlay_compression")
    if comp:
        compression_markdown(w, comp, agg["baseline"])
    prod = report.get("production")
    if prod:
        production_markdown(w, prod)
    for note in report["notes"]:
        w(f"- {note}")
    w("")
    return "\n".join(lines)


def compression_kind(c, i):
    """The boots' kind for the i-th compression qemu/bench compared."""
    return "ember" if i == 0 else f"ember-{c}"


def overlay_compression(agg, compressions):
    """Per overlay compression: what was sealed and fetched, the overlay
    phase and its stages, runtime started, the server's CPU per boot."""
    result = []
    for i, c in enumerate(compressions):
        g = agg.get(compression_kind(c, i))
        if not g:
            continue
        m = g["metrics"]
        phase = g["phases"].get("overlay") or {}
        result.append({
            "compression": c,
            "kind": compression_kind(c, i),
            "sealed_bytes": m.get("overlay_sealed_bytes"),
            "plain_bytes": m.get("overlay_plain_bytes"),
            "overlay_took_ms": phase if phase.get("n") else None,
            "overlay_cpu_ms": phase.get("cpu_ms"),
            "stages_ms": {k: m.get(f"overlay_{k}_ms") for k in ("receive", "keep", "open", "unpack", "write")},
            "runtime_started_ms": g["milestones"].get("runtime-started"),
            "server_cpu_ms_per_boot": g["server_cpu_ms"],
            "load_avg_1m": g["load_avg_1m"],
            "powered_off": g["powered_off"],
            "boots": g["boots"],
        })
    return result


def compression_markdown(w, comp, baseline):
    w("**Overlay compression** (`qemu/bench --overlay-compress " + ",".join(c["compression"] for c in comp)
      + "`; median (min–max); the same overlay, re-encoded by `ember overlay add --compress`)")
    w("")
    w("| Figure | " + " | ".join(c["compression"] for c in comp) + " |")
    w("|---|" + "---:|" * len(comp))
    def row(label, get):
        w(f"| {label} | " + " | ".join(get(c) for c in comp) + " |")
    row("sealed bytes fetched", lambda c: cell(c["sealed_bytes"]).split(" ")[0])
    row("overlay phase (ms)", lambda c: cell(c["overlay_took_ms"]))
    row("overlay phase, PID 1 CPU (ms)", lambda c: cell(c["overlay_cpu_ms"]))
    for k in ("receive", "keep", "open", "unpack", "write"):
        row(f"  {k} (ms)", lambda c, k=k: cell(c["stages_ms"][k]))
    row("runtime started (ms since kernel start)", lambda c: cell(c["runtime_started_ms"]))
    bm = baseline["milestones"].get("runtime-started")
    row("runtime started ÷ baseline's", lambda c: ratio(c["runtime_started_ms"], bm))
    row("server CPU per boot (ms)", lambda c: cell(c["server_cpu_ms_per_boot"]))
    row("host load average (1 min) at each boot", lambda c: " / ".join(str(x) for x in c["load_avg_1m"]))
    w("")


def production_markdown(w, prod):
    e, b = prod["ember"], prod["baseline"]
    w(f"**Production-shaped workload** (median of {prod['boots']}; "
      f"initrd with Debian's containerd, runc and CNI plugins, an OCI image archive and a "
      f"{prod['rke2_mb']} MB rke2-sized file; 64 KB configuration overlay; {prod['guest_mem_mib']} MiB guest)")
    w("")
    w("| Figure | Ember | Baseline | Ember/baseline |")
    w("|---|---:|---:|---:|")
    for key, label in (("initrd_gzip_bytes", f"initrd, {prod['compress']} (bytes)"),
                       ("initrd_unpacked_bytes", "initrd, unpacked (bytes)")):
        w(f"| {label} | {fmt(e.get(key))} | {fmt(b.get(key))} | |")
    rows = [("kernel_initrd_unpack_ms", "kernel's initramfs unpacking (ms)"),
            ("kernel → /init", "kernel start → /init (ms)"),
            ("rootfs_took_ms", "`rootfs` phase (ms): Ember bind mount of the initial rootfs (no snapshot since the UKI slot); baseline cp -a to tmpfs + switch_root"),
            ("rootfs_cpu_ms", "`rootfs` phase, PID 1 CPU (ms)")]
    rows += [(m, f"kernel start → {m} (ms)") for m in PROD_MARKS]
    rows += [("mem_used_kb", "RAM in use after boot, MemTotal − MemAvailable (KiB)")]
    for key, label in rows:
        em, bm = e["figures"].get(key), b["figures"].get(key)
        w(f"| {label} | {cell(em)} | {cell(bm)} | {ratio(em, bm)} |")
    w(f"| RAM in use after boot ÷ initrd unpacked | {e.get('ram_per_initrd') or '—'} | "
      f"{b.get('ram_per_initrd') or '—'} | |")
    w("")


def production(agg, sz, a):
    """The production-shaped workload's figures per side: medians of the
    instants, the rootfs phase, RAM in use, and RAM against the initrd."""
    result = {"boots": a.prod_boots, "rke2_mb": a.rke2_mb, "compress": a.prod_compress, "guest_mem_mib": 2048}
    for kind, side in (("prod-ember", "ember"), ("prod-baseline", "baseline")):
        g = agg.get(kind)
        if not g:
            return None
        figures = {k: g["milestones"].get(k) for k in ("kernel → /init",) + PROD_MARKS}
        rootfs = g["phases"].get("rootfs") or {}
        figures["rootfs_took_ms"] = rootfs if rootfs.get("n") else None
        figures["rootfs_cpu_ms"] = rootfs.get("cpu_ms")
        for k in ("mem_used_kb", "kernel_initrd_unpack_ms"):
            figures[k] = g["metrics"].get(k)
        initrd = sz.get(kind.replace("-", "_") + "_initrd") or {}
        entry = {
            "figures": figures,
            "initrd_gzip_bytes": initrd.get("gzip_bytes"),
            "initrd_unpacked_bytes": initrd.get("uncompressed_bytes"),
        }
        mem = figures["mem_used_kb"]
        if mem and initrd.get("uncompressed_bytes"):
            entry["ram_per_initrd"] = round(mem["median"] * 1024 / initrd["uncompressed_bytes"], 2)
        result[side] = entry
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ember", required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--kernel-release", required=True)
    ap.add_argument("--boots", type=int, required=True)
    ap.add_argument("--prod-boots", type=int, default=0)
    ap.add_argument("--rke2-mb", type=int, default=0)
    ap.add_argument("--prod-compress", default="gzip")
    ap.add_argument("--overlay-compress", default="gzip")
    ap.add_argument("--prod-ember-append", default="")
    ap.add_argument("--prod-baseline-append", default="")
    ap.add_argument("--big-overlay-mb", type=int, default=0)
    ap.add_argument("--overlay-mb", type=float, default=20)
    ap.add_argument("--ember-append", default="")
    ap.add_argument("--baseline-append", default="")
    ap.add_argument("--elapsed-s", type=int, default=0)
    a = ap.parse_args()
    out = a.out

    compressions = [c for c in a.overlay_compress.split(",") if c]
    counts = {k: a.boots for k in KINDS}
    counts.update({compression_kind(c, i): a.boots for i, c in enumerate(compressions)})
    counts.update({k: a.prod_boots for k in PROD_KINDS if a.prod_boots})
    runs = boots(out, counts)
    agg = {k: aggregate(v) for k, v in runs.items()}
    overlay = f"{out}/www/overlay.tar.gz"
    report = {
        "environment": environment(a),
        "config": {
            "boots": a.boots,
            "overlay_bytes": os.path.getsize(overlay) if os.path.exists(overlay) else None,
            "overlay_mb": a.overlay_mb,
            "overlay_compress": compressions,
            "ember_append": a.ember_append,
            "baseline_append": a.baseline_append,
            "prod_boots": a.prod_boots,
            "rke2_mb": a.rke2_mb,
            "prod_ember_append": a.prod_ember_append,
            "prod_baseline_append": a.prod_baseline_append,
        },
        "size": sizes(a, out),
        "boot": agg,
        "runs": runs,
    }
    if a.big_overlay_mb:
        run = load(f"{out}/logs/ember-big-1.run.json", {}) or {}
        t = load(f"{out}/logs/ember-big-1.json", {}) or {}
        big_file = f"{out}/www/overlay-big.tar.gz"
        report["big_overlay"] = {
            "fill_mb": a.big_overlay_mb,
            "overlay_bytes": os.path.getsize(big_file) if os.path.exists(big_file) else None,
            "exit": run.get("exit"),
            "wall_ms": run.get("wall_ms"),
            "metrics": t.get("metrics", {}),
            "phases": {p["name"]: p for p in t.get("phases", [])},
        }
    report["overlay_compression"] = overlay_compression(agg, compressions)
    em, bm = agg["ember"]["metrics"], agg["baseline"]["metrics"]
    report["resources"] = {
        "ember": {k: em.get(k) for k in ("pid1_vmhwm_kb", "pid1_cpu_ms", "mem_used_kb")},
        "baseline": {k: bm.get(k) for k in ("pid1_vmhwm_kb", "pid1_cpu_ms", "mem_used_kb")},
        "notes": {
            "pid1_vmhwm_kb": (
                "Ember: read by the stand-in runtime from /proc/1/status when the init starts it "
                "(after the overlay is extracted)"
                if em.get("pid1_vmhwm_kb") else
                "Ember: not yet measurable: these boots end before the runtime starts, and /init "
                "does not log VmHWM (it would with a `metrics: pid1_vmhwm_kb=N` line)"
            ) + "; baseline: the script reads /proc/$$/status before exec",
            "pid1_cpu_ms": "utime+stime+cutime+cstime of PID 1 from /proc/1/stat, at runtime start",
            "mem_used_kb": "/proc/meminfo read by the stand-in runtime just before it powers off",
        },
    }
    tpm_cmds = em.get("tpm_commands")
    tpm_ms = em.get("tpm_ms")
    report["tpm"] = {
        "commands": tpm_cmds["median"] if tpm_cmds else None,
        "time_ms": tpm_ms["median"] if tpm_ms else None,
        "note": (
            "median of `metrics: tpm_commands=N tpm_ms=M` lines" if tpm_cmds else
            "placeholder (null): /init does not count its TPM commands yet, and qemu/boot's swtpm "
            "does not log them; a `metrics: tpm_commands=N tpm_ms=M` line from /init fills this in "
            "(the attest phase's duration, TPM and network together, is in the phase table)"
        ),
    }
    notes = [
        "Ember boot: the whole sequence against `ember serve` on the host (`" + a.ember_append.strip() + "`): "
        "TPM attestation with swtpm, the sealed overlay fetched over plain HTTP (its key inside the "
        "attested TLS 1.3 session), opened and extracted into / in one stream, the stand-in runtime started and its healthz Ready, the boot reported. "
        "Baseline: bench/baseline/init (busybox sh: mount, insmod in modules.dep order, udhcpc, "
        "wget | tar -xz over plain HTTP, exec the stand-in runtime).",
        "Rows with the same name did the same job (Ember's overlay also decrypts and verifies); "
        "`runtime-started` is the stand-in runtime's first line in both. Ember's attest, measure, "
        "seal-boot-phase, ready and the rest have no baseline counterpart.",
        "PID 1's CPU time includes the kernel's own work in PID 1 before it executes /init "
        "(initramfs unpacking, driver init), the same for both.",
        "Kernel stamps ([s.micros], printk clock) and userspace stamps (CLOCK_BOOTTIME; /proc/uptime "
        "with 10 ms resolution for the baseline) can differ by tens of ms under TCG.",
    ]
    for kind in runs:
        bad = [r["n"] for r in runs[kind] if r["exit"] != 0]
        if bad:
            notes.append(f"{kind}: boots {bad} did not power off cleanly (timeout or error); their "
                         "timelines are still counted for the phases they reached.")
    if a.prod_boots:
        report["production"] = production(agg, report["size"], a)
        notes.append(
            "Production-shaped: the stand-in runtime (in the initrd, as rke2 would be) starts Debian's "
            "containerd, `ctr image import`s the OCI archive and `ctr run`s a busybox container; "
            "`container-running` is when it reads the container's first line. The baseline copies the "
            "initrd into a tmpfs and switch_roots (`rootfs`), then DHCP, wget | tar -xz of the 64 KB "
            "overlay, exec the stand-in. RAM in use is read just before power-off: after the container "
            "runs (and, for Ember, after Ready was reported).")
    report["notes"] = notes

    for kind in runs:
        m = median_boot(runs[kind])
        if not m:
            continue
        title = (f"{'Ember' if kind.endswith('ember') else 'Busybox baseline'}"
                 f"{', production-shaped' if kind.startswith('prod') else ''} boot (median of "
                 f"{len(runs[kind])}: boot {m['n']}), {report['environment']['accel'].upper()}, "
                 f"kernel {a.kernel_release}")
        subprocess.run([a.ember, "timeline", f"{out}/logs/{kind}-{m['n']}.log",
                        "-o", f"{out}/{kind}-timeline.svg", "--title", title],
                       check=False, capture_output=True)
        report.setdefault("timelines", {})[kind] = {"boot": m["n"], "svg": f"{kind}-timeline.svg"}

    with open(f"{out}/bench.json", "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(f"{out}/bench.md", "w") as f:
        f.write(markdown(report))


if __name__ == "__main__":
    main()
