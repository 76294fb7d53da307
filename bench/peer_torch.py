#!/usr/bin/python3
"""Runs bench/peer_torch (lamina against LibTorch on the same work, issue 15) with
interleaved repetitions and writes results/peer_torch/<date>.json, .csv and .md (per
benchmark: lamina time, LibTorch time, ratio lamina/LibTorch: medians over the
repetitions with the min-max spread; threads) and <date>.svg, a bar plot of the
ratios with a line at 1.0 (left of it: lamina faster).

LibTorch runs with glibc's malloc tuned (GLIBC_TUNABLES below, set for the whole
process): without it LibTorch's fresh large allocations page-fault on every call
and it runs 1.5-3x slower (issue 15); this compares against its faster set-up.

    /usr/bin/python3 bench/peer_torch.py [--binary build/native/bench/peer_torch]
        [--repetitions 5] [--filter REGEX] [--min-time 0.5] [--out results/peer_torch]
"""
import argparse
import csv
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile

TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184"
ROOT = pathlib.Path(__file__).resolve().parent.parent
STATS = ("median", "min", "max")
COUNTERS = ("lamina_ms", "torch_ms", "ratio", "lamina_GFLOPs", "torch_GFLOPs", "lamina_GBs", "torch_GBs")


def default_binary():
    for preset in ("native", "release"):
        b = ROOT / "build" / preset / "bench" / "peer_torch"
        if b.exists():
            return b
    return ROOT / "build" / "native" / "bench" / "peer_torch"


def command_output(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions():
    return {
        "gcc": command_output(["g++", "-dumpfullversion"]),
        "libtorch": command_output(["dpkg-query", "-W", "-f=${Version}", "libtorch-dev"]),
        "lamina_commit": command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                    "unknown"),
        "cores": os.cpu_count(),
        "GLIBC_TUNABLES": TUNABLES,
    }


def run(args):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [str(args.binary), f"--benchmark_repetitions={args.repetitions}",
               "--benchmark_enable_random_interleaving=true", "--benchmark_report_aggregates_only=true",
               f"--benchmark_min_time={args.min_time}", f"--benchmark_out={out.name}",
               "--benchmark_out_format=json"]
        if args.filter:
            cmd.append(f"--benchmark_filter={args.filter}")
        env = dict(os.environ, GLIBC_TUNABLES=TUNABLES)
        print(" ".join(cmd), file=sys.stderr)
        subprocess.run(["nice", "-n", "19"] + cmd, env=env, check=True)
        return json.load(open(out.name))


def list_order(args):
    cmd = [str(args.binary), "--benchmark_list_tests"] + ([f"--benchmark_filter={args.filter}"] if args.filter else [])
    names = command_output(cmd).splitlines()
    return {n.replace("/real_time", ""): i for i, n in enumerate(names)}


def rows_of(report):
    """One row per benchmark: {counter: {median, min, max}}, name, threads."""
    rows = {}
    for b in report["benchmarks"]:
        if b.get("run_type") != "aggregate" or b.get("aggregate_name") not in STATS:
            continue
        name = b["run_name"].replace("/real_time", "")
        row = rows.setdefault(name, {"name": name, "threads": int(name.rsplit("threads:", 1)[1])})
        for c in COUNTERS:
            if c in b:
                row.setdefault(c, {})[b["aggregate_name"]] = b[c]
        row["check_err"] = b.get("check_err", row.get("check_err"))
    return list(rows.values())


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        header = ["benchmark", "threads"]
        for c in COUNTERS:
            header += [f"{c}_median", f"{c}_min", f"{c}_max"]
        w.writerow(header + ["check_err"])
        for r in rows:
            line = [r["name"], r["threads"]]
            for c in COUNTERS:
                line += [f"{r[c][s]:.6g}" if c in r else "" for s in STATS]
            w.writerow(line + [f"{r['check_err']:.3g}" if r.get("check_err") is not None else ""])


def fmt(r, c):
    if c not in r:
        return ""
    v = r[c]
    return f"{v['median']:.3g} ({v['min']:.3g}–{v['max']:.3g})"


def write_markdown(path, rows):
    """The table bench/README.md shows: medians, min–max over the repetitions."""
    with open(path, "w") as f:
        f.write("| benchmark | threads | lamina ms | LibTorch ms | lamina / LibTorch | GFLOP/s or GB/s lamina / LibTorch |\n")
        f.write("|---|---|---|---|---|---|\n")
        for r in rows:
            rate = ""
            for unit in ("GFLOPs", "GBs"):
                if f"lamina_{unit}" in r:
                    rate = f"{r[f'lamina_{unit}']['median']:.3g} / {r[f'torch_{unit}']['median']:.3g} {unit.replace('s', '/s')}"
            name = r["name"].rsplit("/threads:", 1)[0]
            f.write(f"| {name} | {r['threads']} | {fmt(r, 'lamina_ms')} | {fmt(r, 'torch_ms')} | {fmt(r, 'ratio')} | {rate} |\n")


def plot(path, rows, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if "ratio" in r]
    names = [r["name"] for r in rows]
    med = [r["ratio"]["median"] for r in rows]
    lo = [r["ratio"]["median"] - r["ratio"]["min"] for r in rows]
    hi = [r["ratio"]["max"] - r["ratio"]["median"] for r in rows]
    colours = ["tab:green" if m <= 1 else "tab:red" for m in med]
    fig, ax = plt.subplots(figsize=(9, 0.26 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh(y, med, xerr=[lo, hi], color=colours, capsize=2)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time lamina / time LibTorch (median, min-max over repetitions; < 1: lamina faster)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", type=pathlib.Path, default=default_binary())
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--min-time", default="0.5")
    p.add_argument("--filter", default="")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "results" / "peer_torch")
    args = p.parse_args()
    report = run(args)
    rows = rows_of(report)
    order = list_order(args)
    rows.sort(key=lambda r: order.get(r["name"], len(order)))  # the binary's order, not the interleaved one
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(versions(), binary=str(args.binary), repetitions=args.repetitions, min_time=args.min_time,
                filter=args.filter, date=report["context"].get("date"), load_avg=report["context"].get("load_avg"))
    json.dump({"meta": meta, "rows": rows}, open(args.out / f"{stamp}.json", "w"), indent=1)
    write_csv(args.out / f"{stamp}.csv", rows)
    write_markdown(args.out / f"{stamp}.md", rows)
    plot(args.out / f"{stamp}.svg", rows,
         f"lamina / LibTorch {meta['libtorch']}, GCC {meta['gcc']}, {meta['cores']} cores, "
         f"{args.repetitions} interleaved repetitions")
    for r in rows:
        rt = r.get("ratio", {})
        print(f"{r['name']:45s} lamina {r['lamina_ms']['median']:9.3f} ms  LibTorch {r['torch_ms']['median']:9.3f} ms  "
              f"ratio {rt.get('median', float('nan')):.2f} ({rt.get('min', float('nan')):.2f}-{rt.get('max', float('nan')):.2f})")
    print(f"wrote {args.out / stamp}.json/.csv/.md/.svg", file=sys.stderr)


if __name__ == "__main__":
    main()
