#!/usr/bin/env bash
# Installs what is missing, builds the examples, and runs the main demo: a short
# Fashion-MNIST comparison of the E1 ResNet with and without LAUREL (baseline,
# +1 layer, RW, RW+LR r=4/8, RW+LR+PA). Extra arguments go to the program (for
# example --full for 3 seeds × 10 epochs on all images). Layer attention (ELA)
# and DynaLay join this comparison when their issues land.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh demo
cmake --preset release -DLAMINA_NATIVE=${LAMINA_NATIVE:-ON} >/dev/null
cmake --build --preset release --target laurel_e1 resnet_fmnist
exec build/release/examples/laurel_e1 "$@"
