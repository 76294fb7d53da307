import json, subprocess, statistics, sys, os
from collections import defaultdict
bins = {"main": "/tmp/bench_kernels_main", "new": "/tmp/bench_kernels_new"}
filt = 'BM_BN.*/0$|BM_Triad/(401408|802816|1605632|3211264)$'
vals = {k: defaultdict(list) for k in bins}
env = dict(os.environ, OMP_NUM_THREADS="1")
for rnd in range(int(sys.argv[1])):
    for k, b in (list(bins.items()) if rnd % 2 == 0 else list(bins.items())[::-1]):
        out = subprocess.run([b, "--benchmark_format=json", "--benchmark_filter=" + filt, "--benchmark_repetitions=5",
                              "--benchmark_min_time=0.2", "--benchmark_enable_random_interleaving=true"],
                             capture_output=True, text=True, env=env, check=True).stdout
        for r in json.loads(out)["benchmarks"]:
            if r.get("run_type") == "iteration":
                vals[k][r["run_name"]].append(r["bytes_per_second"] / 1e9)
json.dump(vals, open("/tmp/bn_cmp.json", "w"))
shapes = {1605632: "16x28x28", 802816: "32x14x14", 401408: "64x7x7"}
rows = [("BM_BNForward", n, n, shapes[n]) for n in shapes] + [("BM_BNForwardReLU", n, n, shapes[n]) for n in shapes] + \
       [("BM_BNBackward", 2 * n, 2 * n, shapes[n]) for n in shapes]
print(f"{'kernel':<18}{'shape':>10} | {'main GB/s':>16} {'%tri':>5} | {'new GB/s':>16} {'%tri':>5} | triad main/new")
for name, arg, tri, sh in rows:
    line = f"{name:<18}{sh:>10} |"
    tris = []
    for k in bins:
        v = vals[k][f"{name}/{arg}/0"]; t = vals[k][f"BM_Triad/{tri}"]
        m, tm = statistics.median(v), statistics.median(t); tris.append(tm)
        line += f" {m:6.1f} [{min(v):4.1f}-{max(v):4.1f}] {100*m/tm:4.0f}% |"
    line += f" {tris[0]:.1f}/{tris[1]:.1f} (n={len(v)})"
    print(line)
