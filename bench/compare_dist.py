#!/usr/bin/env python3
"""2 processes x 1 thread against 1 process x 2 threads for the E1 step, interleaved.

  bench/compare_dist.py build/release/bench/bench_dist [--rounds 5] [--steps 20] [--out file.json]

Each round runs `bench_dist --threads 2` (one process, an MPI singleton) and
`mpirun -np 2 bench_dist --threads 1` (the order alternates between rounds), so
slow drifts of the machine hit both alike. Prints the median step time per
configuration with its range over rounds, the all-reduce share of the step,
and the paired ratio (2x1 / 1x2) per round with its median; with SciPy, a
Wilcoxon signed-rank test and a paired t-test on the per-round times."""
import argparse, json, re, statistics, subprocess, sys

LINE = re.compile(r"step ([0-9.]+) ms .*?all-reduce ([0-9.]+) ms = ([0-9.]+) % .*?arena (\d+) bytes")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2"]


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = LINE.search(out)
    if not m:
        sys.exit(f"compare_dist: no result line in the output of {' '.join(cmd)}:\n{out}")
    return {"step_ms": float(m[1]), "allreduce_ms": float(m[2]), "allreduce_pct": float(m[3]), "arena": int(m[4])}


def summary(xs):
    return statistics.median(xs), min(xs), max(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_dist")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out")
    a = ap.parse_args()
    steps = ["--steps", str(a.steps)]
    configs = {"1x2": [a.bench_dist, "--threads", "2"] + steps,
               "2x1": MPIRUN + [a.bench_dist, "--threads", "1"] + steps}
    res = {k: [] for k in configs}
    for r in range(a.rounds):
        for k in (list(configs) if r % 2 == 0 else list(reversed(configs))):
            res[k].append(run(configs[k]))
        print(f"round {r + 1}/{a.rounds}: 1x2 {res['1x2'][-1]['step_ms']:.1f} ms, "
              f"2x1 {res['2x1'][-1]['step_ms']:.1f} ms", file=sys.stderr, flush=True)
    report = {"rounds": a.rounds, "steps": a.steps, "configs": {}}
    for k, rows in res.items():
        st = summary([x["step_ms"] for x in rows])
        ar = summary([x["allreduce_ms"] for x in rows])
        pct = statistics.median([x["allreduce_pct"] for x in rows])
        report["configs"][k] = {"step_ms": st, "allreduce_ms": ar, "allreduce_pct": pct, "arena_bytes": rows[0]["arena"],
                                "runs": rows}
        print(f"{k}: step {st[0]:.1f} ms ({st[1]:.1f}-{st[2]:.1f}), all-reduce {ar[0]:.2f} ms "
              f"({ar[1]:.2f}-{ar[2]:.2f}) = {pct:.2f} % of the step, arena {rows[0]['arena']} bytes")
    a2 = [x["step_ms"] for x in res["2x1"]]
    a1 = [x["step_ms"] for x in res["1x2"]]
    ratios = [p / q for p, q in zip(a2, a1)]
    report["paired_ratio_2x1_over_1x2"] = {"per_round": ratios, "median": statistics.median(ratios)}
    print(f"paired ratio 2x1 / 1x2: median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    try:
        from scipy import stats
        w = stats.wilcoxon(a2, a1)
        t = stats.ttest_rel(a2, a1)
        report["wilcoxon_p"], report["paired_t_p"] = float(w.pvalue), float(t.pvalue)
        print(f"Wilcoxon signed-rank p = {w.pvalue:.3g}, paired t-test p = {t.pvalue:.3g}")
    except ImportError:
        print("(SciPy not found: no tests; run with /usr/bin/python3)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
