// `rakv train`: trains a GPT-2 of a configuration and writes, under the output directory,
//   log.csv                 step,train_loss,val_loss,lr,tokens_per_s (val_loss empty when not
//                           evaluated; step 0 holds the initial validation loss)
//   model.safetensors       weights + config (atomic)
//   checkpoint.safetensors  weights + AdamW state, to resume (atomic)
//   config                  the full resolved configuration
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "rakv/config.h"

namespace rakv::apps {

struct TrainOptions {
  config::Config config;
  std::string out_dir;
  // Continue from out_dir/checkpoint.safetensors (its configuration, with `config_overrides`).
  bool resume = false;
  std::vector<std::string> config_overrides;  // CONFIG_X=V applied on resume
  // Stop after this many optimizer steps in total (the schedule still targets MAX_ITERS).
  std::optional<int64_t> stop_after;
  bool progress = true;  // progress bar on stderr
  bool sample = false;   // generate CONFIG_SAMPLE_TOKENS after training and print them
};

struct TrainResult {
  int64_t first_step = 0;  // 0, or the checkpoint's step on resume
  int64_t last_step = 0;
  double initial_val_loss = 0;
  double final_val_loss = 0;
  double final_train_loss = 0;
  double seconds = 0;
  double tokens_per_second = 0;
  std::string sample_text;
};

// Runs training; status lines go to `log` (stderr for the CLI). Throws std::exception with a
// one-line message for every input problem, before anything is written to out_dir.
TrainResult train(const TrainOptions& options, std::ostream& log);

// Learning rate at optimizer step `step` (1-based): linear warm-up to `peak` over `warmup`
// steps, then cosine decay to `floor` at `total`.
double learning_rate_at(int64_t step, int64_t warmup, int64_t total, double peak, double floor);

}  // namespace rakv::apps
