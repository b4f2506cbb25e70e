// `rakv bench-train`: training throughput of a configuration on its device — tokens/s, time per
// step and model FLOPs utilisation after a warm-up — on a learnable synthetic token stream
// (each sequence an arithmetic progression mod 256 with its own step), generated on the device so
// that data loading stays out of the measurement. With an export directory it also writes the
// initial weights, every batch and the per-step losses, so that the PyTorch reference
// (bench/torch_reference/train_gpt2.py --import DIR) can run the same steps from the same init.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "rakv/config.h"

namespace rakv::apps {

struct BenchTrainOptions {
  config::Config config;
  int64_t steps = 20;
  int64_t warmup = 5;
  std::string export_dir;  // empty: no export
  std::string json_path;   // empty: no JSON file
  // Profile the timed steps (CUDA builds, CONFIG_DEVICE=cuda): the kernels with the most device
  // time per step go to the log, and a Chrome trace to profile_trace unless it is empty.
  bool profile = false;
  std::string profile_trace;
};

struct BenchTrainResult {
  double tokens_per_second = 0;
  double ms_per_step = 0;
  double mfu = 0;  // 0 when the device's peak is unknown
  double final_loss = 0;
  double peak_memory_gib = 0;
  std::vector<double> losses;  // every step's loss (export mode only)
};

BenchTrainResult bench_train(const BenchTrainOptions& options, std::ostream& log);

}  // namespace rakv::apps
