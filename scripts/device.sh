#!/usr/bin/env bash
# The GPU run (H100 / H200 through the device tool): configures rakv with CUDA against the
# machine's PyTorch libtorch, builds, and runs the stages named in STAGES, writing every log and
# result into one archive $OUT/results.tar.gz plus $OUT/summary.txt (the tool returns at most 8
# files). Prepare the dependencies the GPU image lacks first, on the dev machine:
#   scripts/prepare_device_deps.sh          # then, with the device tool:
#   run(command="STAGES=build,kernel-tests,sanitizer,tests scripts/device.sh", carry=[".device-deps"])
#   run(command="STAGES=build,audit,baselines,e2e scripts/device.sh", carry=[".device-deps"])
# Stages: build, kernel-tests (standalone kernel tests vs float64 references, with timings),
# sanitizer (compute-sanitizer memcheck + racecheck on the kernel tests), tests (the GoogleTest
# suite, CUDA tests included), audit (rakv audit --device cuda), baselines (PyTorch torch.topk /
# SDPA in the same run), e2e (GPT-2 training: rakv bench-train vs PyTorch eager / compile).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device-out}
STAGES=${STAGES:-build,kernel-tests,sanitizer,tests,audit,baselines,e2e}
RESULTS=$(mktemp -d)
SUMMARY=$OUT/summary.txt
mkdir -p "$OUT"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1

note() { echo "[device.sh] $*" | tee -a "$SUMMARY"; }
wants() { [[ ",$STAGES," == *",$1,"* ]]; }
# run_stage NAME COMMAND...: runs a stage, logs to RESULTS/NAME.log, records its status and time.
run_stage() {
  local name=$1 start=$SECONDS rc
  shift
  wants "$name" || return 0
  note "stage $name: start"
  "$@" > "$RESULTS/$name.log" 2>&1
  rc=$?
  note "stage $name: exit $rc after $((SECONDS - start)) s"
  tail -n 25 "$RESULTS/$name.log" | sed "s/^/  [$name] /" | tee -a "$SUMMARY"
  # Archived after every stage, so that a run stopped at the time limit still returns its logs.
  tar -czf "$OUT/results.tar.gz" -C "$RESULTS" .
  return $rc
}

deps() {
  local deps=$ROOT/.device-deps
  [[ -d $deps ]] || { echo "missing .device-deps (run scripts/prepare_device_deps.sh and carry it)"; return 1; }
  # The training text lives where Debian's fortunes package puts it.
  mkdir -p /usr/share/games/fortunes && cp -n "$deps"/fortunes/* /usr/share/games/fortunes/ 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nvcc --version | tail -n 2
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
}

build() {
  deps || return 1
  local prefix
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DRAKV_CUDA=ON -DRAKV_BUILD_BENCH=OFF \
    -DCMAKE_PREFIX_PATH="$prefix" -DRAKV_DEPS_DIR="$ROOT/.device-deps" || return 1
  cmake --build build-cuda -j "$(nproc)" || return 1
  BUILD_DIR=$ROOT/build-cuda-tests tests/cuda/run.sh --build-only
}

# PyTorch's wheels export std::filesystem functions from a statically linked older libstdc++
# (pytorch/pytorch#133437); programs that bind to them crash in std::filesystem calls. Probe one
# test that uses them; if it crashes and passes with the system libstdc++ preloaded, keep that
# preload for the later stages and say so.
diag() {
  local probe="build-cuda/tests/rakv_tests --gtest_filter=Safetensors.RoundTripsEveryDtypeBitExactly"
  readelf -d build-cuda/rakv | grep NEEDED | head -n 4
  c++ --version | head -n 1
  LD_DEBUG=bindings $probe 2>&1 | grep -E "filesystem.*(remove_all|temp_directory)" | sed 's/.*binding file //' | head -n 6
  if $probe > /dev/null 2>&1; then echo "probe passes without a preload"; return 0; fi
  cuda-gdb -batch -ex run -ex bt --args $probe 2>&1 | grep -E "^#" | head -n 15
  local libstdcxx
  libstdcxx=$(c++ -print-file-name=libstdc++.so.6)
  if LD_PRELOAD=$libstdcxx $probe > /dev/null 2>&1; then
    echo "probe crashes, passes with LD_PRELOAD=$libstdcxx: using it for the later stages"
    export LD_PRELOAD=$libstdcxx
  else
    echo "probe crashes even with LD_PRELOAD=$libstdcxx"
  fi
  return 0
}

kernel_tests() { BUILD_DIR=$ROOT/build-cuda-tests tests/cuda/run.sh --no-build; }

sanitizer() {
  local status=0 t
  for t in test_kv_select test_kv_importance test_cross_entropy test_layer_norm test_gate_fold; do
    for tool in memcheck racecheck; do
      echo "=== compute-sanitizer --tool $tool $t --quick --no-bench"
      compute-sanitizer --tool "$tool" --error-exitcode 3 "build-cuda-tests/$t" --quick --no-bench | tail -n 4 || status=1
    done
  done
  return $status
}

# The whole suite; Audit.* and rakv eval's test draw PNG plots, which need gnuplot (not on the
# GPU image; the CPU suite runs them).
tests() { (cd build-cuda && ctest -j 8 --timeout 900 --output-on-failure -E '^Audit\.|^KVCache\.EvalWrites'); }

audit() { build-cuda/rakv audit --device cuda --no-progress --out "$RESULTS/audit-cuda"; }

baselines() { python3 tests/cuda/bench_baselines.py; }

# loss_gap A.csv B.csv NAME_A NAME_B: both runs' losses step by step (step,loss files) and the
# largest difference.
loss_gap() {
  paste -d, "$1" "$2" | awk -F, -v a="$3" -v b="$4" 'NR > 1 {
      d = $2 - $4; if (d < 0) d = -d; if (d > max) max = d; printf "step %s %s %s %s %s\n", $1, a, $2, b, $4 }
      END { printf "max |%s - %s| loss difference: %g\n", a, b, max }'
}

# GPT-2 training, rakv vs PyTorch (eager and compiled) on the same card, same shapes. E2E picks
# the parts: short (T=1024), long (T=16384), agree (same init, same batches), graphs (rakv with
# and without the CUDA graph of the step), rakv_profile (rakv's kernels at T=16384), profile
# (PyTorch's).
# E2E_REF_VARIANTS limits the PyTorch runs of `short` (default: plain ra ra_rmlp).
e2e() {
  local rakv=build-cuda/rakv ref="python3 bench/torch_reference/train_gpt2.py"
  local cfg=configs/defconfigs/gpt2-124m-ra-rmlp dir=$RESULTS/e2e parts=${E2E:-short,long,agree,profile}
  mkdir -p "$dir"
  local -A variants=([plain]="--set CONFIG_RA=n --set CONFIG_RMLP=n" [ra]="--set CONFIG_RMLP=n" [ra_rmlp]="")
  local common="--set CONFIG_DEVICE=cuda --set CONFIG_GRAD_ACCUM_STEPS=1 --set CONFIG_BATCH_SIZE=16"
  if [[ ,$parts, == *,short,* ]]; then
    for v in plain ra ra_rmlp; do
      # shellcheck disable=SC2086
      $rakv bench-train --config $cfg $common ${variants[$v]} --steps 30 --warmup 5 --json "$dir/rakv-$v-1024.json"
      # shellcheck disable=SC2086
      $rakv bench-train --config $cfg $common ${variants[$v]} --set CONFIG_CUDA_GRAPHS=y --steps 30 --warmup 5 \
        --json "$dir/rakv-graph-$v-1024.json"
      [[ " ${E2E_REF_VARIANTS:-plain ra ra_rmlp} " == *" $v "* ]] || continue
      $ref --config $cfg $common ${variants[$v]} --steps 30 --warmup 5 --json "$dir/eager-$v-1024.json"
      $ref --config $cfg $common ${variants[$v]} --steps 30 --warmup 10 --compile --json "$dir/compile-$v-1024.json"
    done
  fi
  local long="--set CONFIG_DEVICE=cuda --set CONFIG_BLOCK_SIZE=16384 --set CONFIG_BATCH_SIZE=1 --set CONFIG_GRAD_ACCUM_STEPS=1"
  local prune="--set CONFIG_RA=n --set CONFIG_RMLP=n --set CONFIG_KV_PRUNE=y"
  local -A long_variants=([plain]="--set CONFIG_RA=n --set CONFIG_RMLP=n" [ra]="--set CONFIG_RMLP=n"
                          [prune_exact]="$prune" [prune_sampling]="$prune --set CONFIG_RA_USE_SAMPLING=y"
                          [plain_ckpt]="--set CONFIG_RA=n --set CONFIG_RMLP=n --set CONFIG_ACTIVATION_CHECKPOINTING=y")
  if [[ ,$parts, == *,long,* ]]; then
    for v in ${E2E_LONG_VARIANTS:-plain ra prune_exact prune_sampling plain_ckpt}; do
      $rakv bench-train --config $cfg $long ${long_variants[$v]} --steps 5 --warmup 2 --json "$dir/rakv-$v-16384.json"
    done
    for v in plain ra prune_exact; do
      $ref --config $cfg $long ${long_variants[$v]} --steps 5 --warmup 2 --json "$dir/eager-$v-16384.json" ||
        echo "pytorch reference $v at T=16384 failed (see above)"
    done
  fi
  if [[ ,$parts, == *,agree,* ]]; then
    # Same init, same batches, a learning rate without loss spikes: the curves must agree.
    local agree="--set CONFIG_DEVICE=cuda --set CONFIG_BLOCK_SIZE=256 --set CONFIG_BATCH_SIZE=8 --set CONFIG_LEARNING_RATE=3e-4"
    $rakv bench-train --config $cfg $agree --steps 30 --warmup 0 --export "$dir/agree"
    $ref --import "$dir/agree" > "$dir/agree/pytorch_losses.csv"
    loss_gap "$dir/agree/rakv_losses.csv" "$dir/agree/pytorch_losses.csv" rakv pytorch
    rm -f "$dir"/agree/*.safetensors
  fi
  if [[ ,$parts, == *,graphs,* ]]; then
    # The same steps without and with the CUDA graph of the step, alternating, three rounds.
    local graph="--set CONFIG_CUDA_GRAPHS=y"
    for round in 1 2 3; do
      for v in plain ra ra_rmlp; do
        # shellcheck disable=SC2086
        $rakv bench-train --config $cfg $common ${variants[$v]} --steps 30 --warmup 5 --json "$dir/rakv-$v-1024-r$round.json"
        # shellcheck disable=SC2086
        $rakv bench-train --config $cfg $common ${variants[$v]} $graph --steps 30 --warmup 5 --json "$dir/rakv-graph-$v-1024-r$round.json"
      done
    done
    # Same init, same batches: the replayed step must give the eager step's losses.
    local agree="--set CONFIG_DEVICE=cuda --set CONFIG_BLOCK_SIZE=256 --set CONFIG_BATCH_SIZE=8 --set CONFIG_LEARNING_RATE=3e-4"
    $rakv bench-train --config $cfg $agree --steps 30 --warmup 0 --export "$dir/graph-agree-eager"
    # shellcheck disable=SC2086
    $rakv bench-train --config $cfg $agree $graph --steps 30 --warmup 0 --export "$dir/graph-agree-graph"
    loss_gap "$dir/graph-agree-eager/rakv_losses.csv" "$dir/graph-agree-graph/rakv_losses.csv" eager graph
    rm -f "$dir"/graph-agree-*/*.safetensors
  fi
  if [[ ,$parts, == *,rakv_profile,* ]]; then
    # Where rakv's own step spends device time at T=16384 (E2E_PROFILE_VARIANTS of the long ones).
    for v in ${E2E_PROFILE_VARIANTS:-plain prune_exact}; do
      # shellcheck disable=SC2086
      $rakv bench-train --config $cfg $long ${long_variants[$v]} --steps 2 --warmup 2 --profile \
        > "$dir/profile-rakv-$v-16384.txt"
      head -n 32 "$dir/profile-rakv-$v-16384.txt"
    done
  fi
  if [[ ,$parts, == *,profile,* ]]; then
    # Where eager time goes (rakv runs the same LibTorch kernels as eager: same ms/step).
    $ref --config $cfg $common ${variants[plain]} --steps 3 --warmup 3 --profile > "$dir/profile-eager-plain-1024.txt"
    $ref --config $cfg $common ${variants[plain]} --steps 3 --warmup 10 --compile --profile \
      > "$dir/profile-compile-plain-1024.txt"
    head -n 30 "$dir/profile-eager-plain-1024.txt"
  fi
  cat "$dir"/*.json > "$dir/all.json" 2>/dev/null
  return 0
}

status=0
run_stage build build || status=1
if wants diag; then
  # Not through run_stage: the preload it may export must reach the later stages.
  note "stage diag: start"
  diag > "$RESULTS/diag.log" 2>&1
  sed "s/^/  [diag] /" "$RESULTS/diag.log" | tee -a "$SUMMARY"
fi
run_stage kernel-tests kernel_tests || status=1
run_stage sanitizer sanitizer || status=1
run_stage tests tests || status=1
run_stage audit audit || status=1
run_stage baselines baselines || status=1
run_stage e2e e2e || status=1
tar -czf "$OUT/results.tar.gz" -C "$RESULTS" .
note "done: status $status; logs in results.tar.gz"
exit $status
