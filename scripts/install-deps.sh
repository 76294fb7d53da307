#!/usr/bin/env bash
# Installs the Debian 12 packages lamina needs, only those that are missing.
#   scripts/install-deps.sh test   # build + test suite
#   scripts/install-deps.sh demo   # build + examples + benchmarks + the Fashion-MNIST data
set -euo pipefail
what=${1:-test}
pkgs=(g++ cmake ninja-build pkg-config libeigen3-dev libxsimd-dev zlib1g-dev libboost-math-dev)
case "$what" in
  test) pkgs+=(catch2 libopenmpi-dev openmpi-bin) ;;
  demo) pkgs+=(libcxxopts-dev nlohmann-json3-dev libbenchmark-dev dataset-fashion-mnist) ;;
  all) pkgs+=(catch2 libopenmpi-dev openmpi-bin libcxxopts-dev nlohmann-json3-dev libbenchmark-dev dataset-fashion-mnist) ;;
  *) echo "usage: $0 [test|demo|all]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "lamina: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
