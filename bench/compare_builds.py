#!/usr/bin/env python3
"""Times the same Google Benchmark program from two builds, interleaved in one run.

  bench/compare_builds.py BEFORE_BINARY AFTER_BINARY [--rounds 5] [--filter REGEX] [--out file.json]

Each round runs BEFORE then AFTER (the order alternates between rounds), so
slow drifts of the machine hit both alike. Prints, per benchmark, the median
real time of each side with its range over rounds and the ratio after/before
of the medians."""
import argparse, json, statistics, subprocess, sys


def run(binary, flt, min_time):
    out = subprocess.run([binary, f"--benchmark_filter={flt}", f"--benchmark_min_time={min_time}",
                          "--benchmark_format=json"], check=True, capture_output=True, text=True).stdout
    return {b["name"]: b["real_time"] for b in json.loads(out)["benchmarks"] if b.get("run_type") != "aggregate"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before"), ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--filter", default=".")
    ap.add_argument("--min-time", default="1.0")
    ap.add_argument("--out")
    a = ap.parse_args()
    times = {"before": {}, "after": {}}
    for r in range(a.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for side in order:
            for name, t in run(getattr(a, side), a.filter, a.min_time).items():
                times[side].setdefault(name, []).append(t)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    rows = []
    print(f"{'benchmark':34} {'before ms (min-max)':>24} {'after ms (min-max)':>24} {'after/before':>12}")
    for name in times["before"]:
        b, f = times["before"][name], times["after"].get(name, [])
        if not f:
            continue
        mb, mf = statistics.median(b), statistics.median(f)
        rows.append({"benchmark": name, "before_ms": b, "after_ms": f, "before_median": mb, "after_median": mf,
                     "ratio": mf / mb})
        print(f"{name:34} {mb:8.1f} ({min(b):6.1f}-{max(b):6.1f}) {mf:8.1f} ({min(f):6.1f}-{max(f):6.1f}) {mf / mb:12.3f}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
