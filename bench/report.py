#!/usr/bin/env python3
"""Runs a lamina benchmark binary with repetitions and prints, per kernel and
size, the median GB/s, the % of the triad ceiling measured in the same run, and
the speed-up over the scalar reference and the Eigen composition. Repetitions
run in random order across benchmarks (Google Benchmark's random interleaving).

    bench/report.py build/native/bench/bench_kernels [--repetitions 5] [--json out.json] [--benchmark_filter=...]
"""
import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict

IMPL = {0: "simd", 1: "scalar", 2: "eigen"}


def run(binary, reps, extra):
    # Repetitions in random order across benchmarks: on a noisy machine a slow
    # spell then hits the triad and the kernels alike instead of one of them.
    cmd = [binary, "--benchmark_format=json", f"--benchmark_repetitions={reps}",
           "--benchmark_report_aggregates_only=false", "--benchmark_enable_random_interleaving=true"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def medians(doc):
    """(name, args) -> median of bytes_per_second and real_time over repetitions."""
    runs = defaultdict(lambda: {"bps": [], "t": []})
    for b in doc["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        name = b["run_name"] if "run_name" in b else b["name"]
        runs[name]["bps"].append(b.get("bytes_per_second", 0.0))
        runs[name]["t"].append(b["real_time"])
    return {k: {"gbs": statistics.median(v["bps"]) / 1e9, "t": statistics.median(v["t"]), "n": len(v["t"])}
            for k, v in runs.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--json", help="also save the medians here")
    a, extra = ap.parse_known_args()  # anything else goes to the benchmark (e.g. --benchmark_filter=...)
    med = medians(run(a.binary, a.repetitions, extra))
    triad = {int(k.split("/")[1]): v["gbs"] for k, v in med.items() if k.startswith("BM_Triad/")}
    rows = defaultdict(dict)
    for name, v in med.items():
        parts = name.split("/")
        if len(parts) < 3 or parts[0] in ("BM_Triad", "BM_Copy"):
            continue
        rows[(parts[0], int(parts[1]))][IMPL[int(parts[2])]] = v
    dram_triad = triad.get(max(triad)) if triad else None
    print(f"{'kernel':<30} {'size':>10} {'GB/s':>8} {'% triad':>8} {'x scalar':>9} {'x Eigen':>8}")
    out = []
    for (kernel, n), impls in sorted(rows.items()):
        s = impls.get("simd")
        if not s:
            continue
        # The triad of the same element count, else the largest (DRAM) one.
        tri = triad.get(n, dram_triad if n > 1 << 20 else None)
        pct = 100 * s["gbs"] / tri if tri else float("nan")
        xs = impls["scalar"]["t"] / s["t"] if "scalar" in impls else float("nan")
        xe = impls["eigen"]["t"] / s["t"] if "eigen" in impls else float("nan")
        print(f"{kernel[3:]:<30} {n:>10} {s['gbs']:>8.2f} {pct:>7.1f}% {xs:>8.2f}x {xe:>7.2f}x")
        out.append({"kernel": kernel[3:], "size": n, "gbs": s["gbs"], "pct_triad": pct, "speedup_scalar": xs,
                    "speedup_eigen": xe, "repetitions": s["n"]})
    print("triad GB/s by size: " + ", ".join(f"{n}: {g:.2f}" for n, g in sorted(triad.items())))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": out, "triad_gbs": triad}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
