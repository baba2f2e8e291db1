#!/usr/bin/env python3
"""The table and the JSON of bench/run.sh, from its results file ("key value" lines), with the
ratios and the targets of issue 8's table.

    bench/report.py RESULTS [--json OUT]
"""
import argparse
import json
import sys

SYSTEMS = ("ours", "passthrough", "rclone", "sshfs")


def load(path):
    flat = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition(" ")
            if key:
                flat[key] = value
    nested = {}
    for key, value in flat.items():
        group, _, name = key.partition(".")
        try:
            parsed = float(value) if "." in value or "e" in value else int(value)
        except ValueError:
            parsed = value.replace("_", " ") if key == "meta.cpu" else value
        nested.setdefault(group, {})[name] = parsed
    return nested


def num(r, system, name):
    v = r.get(system, {}).get(name)
    return v if isinstance(v, (int, float)) else None


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt(v, digits=None):
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--json")
    args = ap.parse_args()
    r = load(args.results)
    meta = r.get("meta", {})
    peers = bool(meta.get("peers"))
    tls = num(r, "tls", "mbps")

    # (label, metric, unit, higher is better)
    rows = [
        ("cp large file in, through unmount", "cp_mbps", "MB/s", True),
        ("  (until cp returns)", "cp_return_mbps", "MB/s", True),
        ("  (until fsync returns)", "cp_fsync_mbps", "MB/s", True),
        ("cat large file out, cold", "cat_cold_mbps", "MB/s", True),
        ("cat large file out, warm", "cat_warm_mbps", "MB/s", True),
        ("small files in, through unmount", "small_in_fps", "files/s", True),
        ("  (until cp -r returns)", "small_in_return_fps", "files/s", True),
        ("  (until fsync returns)", "small_in_fsync_fps", "files/s", True),
        ("small files out, fresh mount", "small_out_fps", "files/s", True),
        ("ls -l of the small files, fresh mount", "ls_seconds", "s", False),
        ("random 4 KiB reads, cold", "fio_cold_iops", "IOPS", True),
        ("random 4 KiB reads, warm", "fio_warm_iops", "IOPS", True),
        ("peak RSS of the mount process", "rss_mb", "MB", False),
        ("bytes on the storage side / data", "disk_ratio", "x", False),
    ]
    data_bytes = meta.get("bytes", 0) + meta.get("files", 0) * meta.get("file_bytes", 0)
    for s in SYSTEMS:
        d = num(r, s, "disk_bytes")
        if d is not None and data_bytes:
            r[s]["disk_ratio"] = d / data_bytes

    # The ratio printed for a row: ours over the system in the same row, inverted where lower is
    # better so that above 1 always means ours is ahead.
    def speedup(metric, other, higher):
        a, b = num(r, "ours", metric), num(r, other, metric)
        return ratio(a, b) if higher else ratio(b, a)

    systems = [s for s in SYSTEMS if s in r and (peers or s in ("ours", "passthrough"))]
    head = ["what", "unit"] + systems + ["ours/" + ("pt" if s == "passthrough" else s)
                                         for s in systems if s != "ours"]
    table = []
    for label, metric, unit, higher in rows:
        cells = [label, unit] + [fmt(num(r, s, metric), 4 if metric == "disk_ratio" else None)
                                 for s in systems]
        cells += [fmt(speedup(metric, s, higher), 2) for s in systems if s != "ours"]
        table.append(cells)
    extra = [
        ("TLS 1.3 stream ceiling (median of 3)", tls, "MB/s"),
        ("splitfs store", num(r, "ours", "store_mbps"), "MB/s"),
        ("splitfs fetch", num(r, "ours", "fetch_mbps"), "MB/s"),
        ("mount cache budget", num(r, "ours", "cache_budget_mb"), "MB"),
        ("peak RSS of the mount per phase (cp, cat, fio cold, small in, ls -l, small out)", None,
         ""),
        ("peak RSS of the mount, memory probe", num(r, "ours", "probe_rss_mb"), "MB"),
        ("  probe: write, read cold", None, ""),
        ("  probe: peak RSS writing, reading", None, ""),
        ("peak RSS, HTTPS server", num(r, "ours", "https_rss_mb"), "MB"),
        ("peak RSS, TCP server", num(r, "ours", "tcp_rss_mb"), "MB"),
    ]
    if peers:
        extra.append(("peak RSS, rclone serve webdav", num(r, "rclone", "serve_rss_mb"), "MB"))

    widths = [max(len(str(row[i])) for row in [head] + table) for i in range(len(head))]
    line = lambda cells: "  ".join(
        str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells))
    out = []
    out.append(f"splitfs benchmark {meta.get('date', '')} on {meta.get('host', '')}: "
               f"{meta.get('cpus', '?')} CPUs ({meta.get('cpu', '?')}), kernel {meta.get('kernel', '?')}")
    out.append(f"load average: {meta.get('load_start', '?')} at the start, "
               f"{meta.get('load_end', '?')} at the end")
    out.append(f"large file {meta.get('bytes', 0):,} bytes; {meta.get('files', 0):,} small files of "
               f"{meta.get('file_bytes', 0):,} bytes; memory probe {meta.get('rss_bytes', 0):,} bytes")
    out.append(f"source: commit {meta.get('commit', '?')} with {meta.get('uncommitted_files', '?')} "
               f"uncommitted files; our mount's extra options: {meta.get('mount_options', 'none')}")
    if peers:
        out.append(f"peers: rclone {r.get('rclone', {}).get('version', '?')} crypt mount "
                   "(--vfs-cache-mode writes --vfs-write-back 0s) over rclone serve webdav with TLS; "
                   f"sshfs {r.get('sshfs', {}).get('version', '?')} to a local sshd "
                   f"({r.get('sshfs', {}).get('cipher', '?')}); {meta.get('fio', 'fio')}")
    out.append("ratios: above 1 means ours is ahead (for seconds, MB and bytes: theirs over ours)")
    out.append("")
    out.append(line(head))
    out.append(line(["-" * w for w in widths]))
    out.extend(line(row) for row in table)
    out.append("")
    probe_rw = (f"{fmt(num(r, 'ours', 'probe_cp_mbps'))} / "
                f"{fmt(num(r, 'ours', 'probe_cat_cold_mbps'))} MB/s")
    ew = max(len(e[0]) for e in extra)
    for label, value, unit in extra:
        if label.startswith("peak RSS of the mount per phase"):
            if "rss_phases_mb" not in r.get("ours", {}):
                continue
            out.append(f"{label.ljust(ew)}  {r['ours']['rss_phases_mb']} MB")
            continue
        if label.strip().startswith("probe:"):
            if num(r, "ours", "probe_cp_mbps") is None:
                continue
            shown = probe_rw
            if "RSS" in label:
                shown = f"{r['ours'].get('probe_rss_phases_mb', '?')} MB"
        else:
            shown = f"{fmt(value)} {unit}"
        out.append(f"{label.ljust(ew)}  {shown}")
    if tls:
        out.append(f"{'TLS cipher'.ljust(ew)}  {r['tls'].get('cipher', '?')} "
                   f"(runs: {r['tls'].get('runs', '?')} MB/s)")

    # The targets.
    def pt(metric):
        return ratio(num(r, "ours", metric), num(r, "passthrough", metric))

    def rc(metric):
        return ratio(num(r, "ours", metric), num(r, "rclone", metric)) if peers else None

    def check(value, limit, higher=True):
        if value is None:
            return None
        return value >= limit if higher else value <= limit

    budget = num(r, "ours", "cache_budget_mb")
    rss_limit = budget + 64 * 1.048576 if budget is not None else None
    cold_pt = num(r, "passthrough", "cat_cold_mbps")
    targets = [
        ("cp in, until durable >= 0.5 x passthrough cp", pt("cp_mbps"), 0.5, True),
        ("cp in, until durable >= 3 x rclone", rc("cp_mbps"), 3.0, True),
        ("cat cold >= 0.4 x passthrough cat", pt("cat_cold_mbps"), 0.4, True),
        ("cat cold >= 2.5 x rclone", rc("cat_cold_mbps"), 2.5, True),
        ("cat warm >= 0.8 x passthrough cat warm", pt("cat_warm_mbps"), 0.8, True),
        ("cat warm >= 0.8 x passthrough cat cold",
         ratio(num(r, "ours", "cat_warm_mbps"), cold_pt), 0.8, True),
        ("splitfs store >= 0.5 x TLS stream", ratio(num(r, "ours", "store_mbps"), tls), 0.5, True),
        ("splitfs fetch >= 0.5 x TLS stream", ratio(num(r, "ours", "fetch_mbps"), tls), 0.5, True),
        ("small files in >= 1,000 files/s", num(r, "ours", "small_in_fps"), 1000, True),
        ("ls -l, fresh mount <= sshfs (ours / sshfs time)",
         ratio(num(r, "ours", "ls_seconds"), num(r, "sshfs", "ls_seconds")) if peers else None,
         1.0, False),
        ("random 4 KiB warm >= 0.5 x passthrough IOPS", pt("fio_warm_iops"), 0.5, True),
        (f"mount peak RSS <= cache budget + 64 MiB ({fmt(rss_limit)} MB), large file",
         num(r, "ours", "rss_mb"), rss_limit, False),
        (f"mount peak RSS <= cache budget + 64 MiB, memory probe",
         num(r, "ours", "probe_rss_mb"), rss_limit, False),
        ("HTTPS server peak RSS <= 150 MB", num(r, "ours", "https_rss_mb"), 150, False),
        ("TCP server peak RSS <= 150 MB", num(r, "ours", "tcp_rss_mb"), 150, False),
    ]
    out.append("")
    out.append("targets (issue 8)")
    tw = max(len(t[0]) for t in targets)
    verdicts = []
    for label, value, limit, higher in targets:
        ok = check(value, limit, higher) if limit is not None else None
        verdict = "n/a" if ok is None else ("met" if ok else "NOT met")
        verdicts.append({"target": label, "value": value, "limit": limit, "met": ok})
        out.append(f"  {label.ljust(tw)}  {fmt(value, 2).rjust(9)}  {verdict}")
    for s in SYSTEMS:
        for flag in ("big_mismatch", "small_mismatch", "fetch_mismatch"):
            if r.get(s, {}).get(flag):
                out.append(f"  WARNING: {s}: {flag.replace('_', ' ')}: data read back differed")
    print("\n".join(out))

    if args.json:
        doc = {"meta": meta, "tls": r.get("tls", {}),
               "systems": {s: r[s] for s in SYSTEMS if s in r},
               "ratios": {}, "targets": verdicts}
        for label, metric, unit, higher in rows:
            doc["ratios"][metric] = {s: speedup(metric, s, higher) for s in systems if s != "ours"}
        doc["ratios"]["store_over_tls"] = ratio(num(r, "ours", "store_mbps"), tls)
        doc["ratios"]["fetch_over_tls"] = ratio(num(r, "ours", "fetch_mbps"), tls)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
