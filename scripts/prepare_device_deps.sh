#!/usr/bin/env bash
# Copies what the GPU machine lacks into .device-deps/ (git-ignored, carried by the device tool):
# the nlohmann-json and CLI11 headers, GoogleTest's sources and the fortunes text. The GPU image
# has CUDA, PyTorch, CMake and ninja but no Debian -dev packages, and cannot download anything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rm -rf .device-deps
mkdir -p .device-deps/include .device-deps/fortunes
cp -r /usr/include/nlohmann /usr/include/CLI .device-deps/include/
cp -r /usr/src/googletest .device-deps/googletest
find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -exec cp {} .device-deps/fortunes/ \;
du -sh .device-deps
