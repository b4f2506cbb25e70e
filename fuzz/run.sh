#!/usr/bin/env bash
# Runs each fuzz target for SECONDS on its seed corpus and prints the executions per target.
#   fuzz/run.sh BUILD_DIR SECONDS          (what `make fuzz FUZZ_SECONDS=N` runs)
# New inputs that reach new code go to BUILD_DIR/corpus/<target>/ (the repository's seed corpus
# is only read); an input that crashes or breaks an invariant is saved under BUILD_DIR/artifacts/
# and replays with `BUILD_DIR/<target> FILE`.
set -euo pipefail
build=${1:?usage: fuzz/run.sh BUILD_DIR SECONDS}
seconds=${2:?usage: fuzz/run.sh BUILD_DIR SECONDS}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/corpus/config" "$build/corpus/safetensors" "$build/artifacts"
"$build/fuzz_config_dict" "$build/config.dict" "$build/corpus/config"

# Runs one target; prints its executions, or the end of its log when it found a problem.
run_target() {
  local target=$1 dict=$2
  shift 2
  local log="$build/$target.log"
  if "$build/$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
    -dict="$dict" -artifact_prefix="$build/artifacts/$target-" "$build/corpus/${target#fuzz_}" \
    "$@" >"$log" 2>&1; then
    local execs rate done_line
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    echo "$target: $execs executions in ${seconds} s ($rate/s), no crash, no invariant broken;" \
      "$(sed -E 's/.*(cov: [0-9]+).*(corp: [0-9]+)\/.*/\1 edges, \2 inputs/' <<<"$done_line")"
  else
    echo "$target: FAILED; the last lines of $log:"
    tail -n 40 "$log"
    return 1
  fi
}

failed=0
run_target fuzz_config "$build/config.dict" "$root/fuzz/corpus/config" "$root/configs/defconfigs" ||
  failed=$((failed + 1))
run_target fuzz_safetensors "$root/fuzz/safetensors.dict" "$root/fuzz/corpus/safetensors" ||
  failed=$((failed + 1))
echo "fuzz: $((2 - failed)) passed, $failed failed"
((failed == 0))
