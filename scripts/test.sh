#!/usr/bin/env bash
# Installs what is missing, builds and runs the whole test suite: the optimised
# build with assertions, then the ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
cmake --workflow --preset dev
cmake --workflow --preset asan
