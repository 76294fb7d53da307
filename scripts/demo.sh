#!/usr/bin/env bash
# Installs what is missing, builds the examples, and runs the main demo: a short
# Fashion-MNIST training of the E1 baseline ResNet. Extra arguments go to the
# program (for example --full for the whole 10-epoch recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh demo
cmake --preset release -DLAMINA_NATIVE=${LAMINA_NATIVE:-ON} >/dev/null
cmake --build --preset release --target resnet_fmnist
exec build/release/examples/resnet_fmnist "$@"
