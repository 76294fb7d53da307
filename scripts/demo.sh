#!/usr/bin/env bash
# Installs what is missing, builds the examples, and runs the main demo: short
# Fashion-MNIST comparisons (a subset, minutes on 2 cores):
#  1. E1: the ResNet with and without LAUREL (baseline, +1 layer, RW,
#     RW+LR r=4/8, RW+LR+PA), one epoch;
#  2. E2: the n = 4 ResNet with layer attention (none, MRLA-base, ELA,
#     MRLA-light), two epochs, so that ELA's skips act in the second;
#  3. E3: DynaLay (a conventional dense network, the static FPI model, DynaLay
#     at lambda_c 0.1 / 0.3 / 1.0), two model epochs plus one agent epoch.
# Extra arguments go to all three programs, so only the flags they share (for
# example --full for 3 seeds × 10
# epochs on all images; --seeds 2 for a Welch test in the short run; --epochs,
# --train-limit, --threads).  Each has --help.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh demo
cmake --preset release -DLAMINA_NATIVE=${LAMINA_NATIVE:-ON} >/dev/null
cmake --build --preset release --target laurel_e1 ela_e2 dynalay_e3 resnet_fmnist
echo "== E1: LAUREL =="
build/release/examples/laurel_e1 "$@"
echo
echo "== E2: layer attention (MRLA-base, ELA, MRLA-light) =="
build/release/examples/ela_e2 "$@"
echo
echo "== E3: DynaLay (FPI layers and an agent) =="
build/release/examples/dynalay_e3 "$@"
