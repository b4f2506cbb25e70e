#!/usr/bin/env bash
# Installs, by Debian package name, everything rakv needs to build, test and run.
# Idempotent: packages already present are not touched, so a second run takes a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev          # LibTorch 1.13 (CPU)
  libopenblas0-pthread  # switches the libblas.so.3 alternative to OpenBLAS (30x faster GEMM)
  libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev
  kconfig-frontends-nox # kconfig-conf / kconfig-mconf for `make menuconfig`
  fortunes              # packaged English text: the default training corpus
  gnuplot-nox           # PNG plots for `rakv audit` and `rakv eval`
)
# `make fuzz`: clang with libFuzzer and its sanitizer runtimes (FuzzedDataProvider.h included).
# `make test-sanitize` needs nothing more: GCC's libasan and libubsan come with build-essential.
[[ "${RAKV_SETUP_SANITIZE:-0}" == 1 ]] && packages+=(clang libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "rakv setup: installing ${missing[*]}" >&2
sudo_cmd=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "rakv setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
