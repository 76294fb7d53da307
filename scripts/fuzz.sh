#!/usr/bin/env bash
# Builds every libFuzzer target with clang (ASan + UBSan) and runs each one for
# a given time (and at most a given number of executions), starting from the
# seeds in fuzz/corpus/<name>/ (target fuzz_<name>; CTest replays them as
# "fuzz corpus: <name>"; a crash worth keeping goes there too). Prints, per
# target, the executions, crashes (sanitizer reports, uncaught exceptions,
# timeouts, out-of-memory) and mismatches (a kernel against its reference or
# documented non-finite rule, a parser property), and exits non-zero if any
# target found something.
#
#   scripts/fuzz.sh [--time SECONDS] [--runs N] [--build-only] [target ...]
#
# Defaults: 600 seconds per target, no execution limit, every target. New
# inputs go to build/fuzz/corpus/<target>/, findings of the last run to
# build/fuzz/artifacts/<target>/, the output to build/fuzz/logs/<target>.log.
# The kernel fuzzers are compiled for the widest ISA this CPU has (AVX-512BW or
# AVX2+FMA) and run each kernel for SSE2 and for that ISA. The per-input
# timeout is generous (600 s): on a loaded machine a descheduled process
# otherwise reports a spurious timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600 runs=-1 build_only=0 targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(fuzz_softmax fuzz_kl_logits fuzz_kl_probs fuzz_aggregation fuzz_depthwise fuzz_checkpoint fuzz_idx)  # fuzz/targets.cmake
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

isa=""
if grep -qw avx512bw /proc/cpuinfo; then isa="-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mfma"
elif grep -qw avx2 /proc/cpuinfo; then isa="-mavx2;-mfma"; fi
build=build/fuzz
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLAMINA_BUILD_FUZZERS=ON -DLAMINA_BUILD_TESTS=OFF -DLAMINA_BUILD_EXAMPLES=OFF -DLAMINA_BUILD_BENCHMARKS=OFF \
  -DLAMINA_OPENMP=OFF "-DLAMINA_FUZZ_ISA_FLAGS=$isa" >/dev/null
nice -n 10 cmake --build "$build" --target "${targets[@]}"
[ "$build_only" = 0 ] || exit 0

found=0
printf '%-18s %12s %8s %10s %8s\n' target executions crashes mismatches seconds
for t in "${targets[@]}"; do
  bin=$(find "$build/fuzz" -maxdepth 1 -name "$t" -type f | head -1)
  seeds="fuzz/corpus/${t#fuzz_}" work="$build/corpus/$t" art="$build/artifacts/$t" log="$build/logs/$t.log"
  rm -rf "$art"  # findings of this run only
  mkdir -p "$work" "$art" "$(dirname "$log")" "$seeds"
  start=$(date +%s)
  set +e
  nice -n 10 "$bin" -max_total_time="$seconds" -runs="$runs" -print_final_stats=1 -timeout=600 -rss_limit_mb=2048 \
    -artifact_prefix="$art/" "$work" "$seeds" >"$log" 2>&1
  rc=$?
  set -e
  spent=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  mismatches=$(grep -c 'lamina-fuzz: mismatch' "$log" || true)
  crashes=$(( $(find "$art" -type f | wc -l) - mismatches ))
  [ "$rc" = 0 ] || [ "$crashes" -gt 0 ] || [ "$mismatches" -gt 0 ] || crashes=1  # died without an artifact
  printf '%-18s %12s %8d %10d %8d\n' "$t" "${execs:-?}" "$crashes" "$mismatches" "$spent"
  if [ "$crashes" -gt 0 ] || [ "$mismatches" -gt 0 ]; then found=1; echo "  see $log and $art/"; fi
done
exit "$found"
