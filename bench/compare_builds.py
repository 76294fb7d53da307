#!/usr/bin/env python3
"""Times the same Google Benchmark program from two builds, interleaved in one run.

  bench/compare_builds.py BEFORE_BINARY AFTER_BINARY [--rounds 6] [--filter REGEX]
                          [--control] [--out file.json]

Each round runs every side once, the order rotated over all its permutations
between rounds, so slow drifts of the machine hit every side alike. Prints,
per benchmark, the median real time of each side with its range over rounds,
the ratio after/before of the medians, the range of the per-round ratios and
the p-value of a paired t-test over rounds (scipy, when importable).

--control adds a third side, a byte-identical copy of AFTER (an A/A test): its
ratio to AFTER shows how far two runs of the same code differ with this method
on this machine, the noise a before/after ratio has to be read against."""
import argparse, itertools, json, os, shutil, statistics, subprocess, sys, tempfile


def run(binary, flt, min_time):
    out = subprocess.run([binary, f"--benchmark_filter={flt}", f"--benchmark_min_time={min_time}",
                          "--benchmark_format=json"], check=True, capture_output=True, text=True).stdout
    return {b["name"]: b["real_time"] for b in json.loads(out)["benchmarks"] if b.get("run_type") != "aggregate"}


def paired_p(x, y):
    try:
        from scipy import stats
    except ImportError:
        return None
    return float(stats.ttest_rel(y, x).pvalue) if len(x) > 1 else None


def compare(x, y):
    """y against x: ratio of medians, per-round ratio range, paired-t p."""
    per_round = [b / a for a, b in zip(x, y)]
    return {"ratio": statistics.median(y) / statistics.median(x), "round_min": min(per_round),
            "round_max": max(per_round), "paired_t_p": paired_p(x, y)}


def fmt(c):
    p = "" if c["paired_t_p"] is None else f" p={c['paired_t_p']:.3f}"
    return f"{c['ratio']:.4f} ({c['round_min']:.3f}-{c['round_max']:.3f}){p}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before"), ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--filter", default=".")
    ap.add_argument("--min-time", default="1.0")
    ap.add_argument("--control", action="store_true", help="add a copy of AFTER as an A/A control")
    ap.add_argument("--out")
    a = ap.parse_args()
    bins = {"before": a.before, "after": a.after}
    tmp = None
    if a.control:
        tmp = tempfile.mkdtemp()
        bins["control"] = os.path.join(tmp, os.path.basename(a.after) + ".control")
        shutil.copy2(a.after, bins["control"])
    orders = list(itertools.permutations(bins))
    times = {side: {} for side in bins}
    try:
        for r in range(a.rounds):
            for side in orders[r % len(orders)]:
                for name, t in run(bins[side], a.filter, a.min_time).items():
                    times[side].setdefault(name, []).append(t)
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp)
    rows = []
    head = f"{'benchmark':34} {'before ms':>9} {'after ms':>9} {'after/before (round range) p':>32}"
    print(head + (f" {'control/after':>32}" if a.control else ""))
    for name, b in times["before"].items():
        f = times["after"].get(name, [])
        if not f:
            continue
        row = {"benchmark": name, "ms": {side: times[side][name] for side in bins},
               "median_ms": {side: statistics.median(times[side][name]) for side in bins},
               "after_over_before": compare(b, f)}
        line = f"{name:34} {row['median_ms']['before']:9.1f} {row['median_ms']['after']:9.1f} {fmt(row['after_over_before']):>32}"
        if a.control:
            row["control_over_after"] = compare(f, times["control"][name])
            line += f" {fmt(row['control_over_after']):>32}"
        rows.append(row)
        print(line)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"rounds": a.rounds, "orders": [orders[r % len(orders)] for r in range(a.rounds)], "rows": rows},
                      fh, indent=1)


if __name__ == "__main__":
    main()
