#!/usr/bin/env bash
# Builds and runs rakv's standalone CUDA kernel tests (no LibTorch, no GoogleTest).
#   tests/cuda/run.sh                 build into build-cuda-tests/, then run every test
#   tests/cuda/run.sh --build-only    compile only (works on a machine without a GPU)
#   tests/cuda/run.sh --no-build      run binaries built earlier
#   extra flags (--quick, --no-bench) are passed to the test programs
# BUILD_DIR overrides the build folder; NVCC the compiler; set BASELINES=1 to also time the
# PyTorch baselines (tests/cuda/bench_baselines.py) when python3 has torch.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-cuda-tests}
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
mode=all
args=()
for a in "$@"; do
  case "$a" in
    --build-only) mode=build ;;
    --no-build) mode=run ;;
    *) args+=("$a") ;;
  esac
done

flags=(-std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=sm_90
       --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter -Werror=all-warnings
       -I"$root/include" -I"$root/tests/cuda")
tests=(test_kv_select test_kv_importance test_cross_entropy test_layer_norm test_gate_fold)

if [[ $mode != run ]]; then
  mkdir -p "$build"
  pids=()
  for src in "$root"/kernels/cuda/*.cu; do
    "$nvcc" "${flags[@]}" -c "$src" -o "$build/$(basename "${src%.cu}").o" & pids+=($!)
  done
  for t in "${tests[@]}"; do
    "$nvcc" "${flags[@]}" -c "$root/tests/cuda/$t.cu" -o "$build/$t.o" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  kernel_objs=()
  for src in "$root"/kernels/cuda/*.cu; do kernel_objs+=("$build/$(basename "${src%.cu}").o"); done
  for t in "${tests[@]}"; do
    "$nvcc" "${flags[@]}" "$build/$t.o" "${kernel_objs[@]}" -o "$build/$t"
  done
  echo "built: ${tests[*]} in $build"
fi
[[ $mode == build ]] && exit 0

status=0
for t in "${tests[@]}"; do
  echo "=== $t"
  "$build/$t" "${args[@]}" || status=1
done
if [[ ${BASELINES:-0} == 1 ]] && python3 -c 'import torch' 2>/dev/null; then
  echo "=== PyTorch baselines"
  PYTHONUNBUFFERED=1 python3 "$root/tests/cuda/bench_baselines.py" || status=1
fi
exit $status
