// `rakv eval`: validation perplexity of a trained model under KV-cache budgets and KVSplice
// compression, with streaming (token-by-token, cached) evaluation, and what each costs in cache
// bytes. Writes DIR/eval.csv and DIR/eval.png (perplexity against cache bytes).
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "rakv/model/gpt2.h"
#include "rakv/nn/kv_cache.h"

namespace rakv::apps {

inline constexpr const char* kEvalCsvHeader =
    "setting,keep_ratio,latent,ppl,cache_bytes,full_cache_bytes,compression";

struct EvalOptions {
  std::string checkpoint;
  std::vector<double> keep_ratios = {1.0, 0.5, 0.38, 0.2};
  std::string kvsplice_file;     // a set from `rakv calibrate`: one more row
  std::vector<int64_t> latents;  // calibrate a KVSplice per latent on the training split
  int64_t tokens = 8192;         // validation tokens evaluated (whole blocks)
  int64_t calibration_tokens = 8192;
  std::string out_dir;
};

struct EvalRow {
  std::string setting;
  double keep_ratio = 1.0;
  std::optional<int64_t> latent;
  double perplexity = 0;
  int64_t cache_bytes = 0;       // cache of one sequence at the end of a block
  int64_t full_cache_bytes = 0;  // a plain cache of the same tokens
};

struct StreamingResult {
  double perplexity = 0;
  int64_t cache_bytes = 0;
  int64_t full_cache_bytes = 0;
};

// Perplexity of next-token prediction over `tokens` tokens of `text`, in windows of the block
// size (each from an empty cache), fed one token at a time through the cache with `policies`.
StreamingResult streaming_perplexity(model::GPT2& model, const std::vector<uint8_t>& text,
                                     int64_t tokens,
                                     const std::vector<nn::KVCachePolicy>& policies);
// The same windows through the uncached forward pass (the reference for keep ratio 1).
double full_perplexity(model::GPT2& model, const std::vector<uint8_t>& text, int64_t tokens);

std::vector<EvalRow> run_eval(const EvalOptions& options, std::ostream& log);

}  // namespace rakv::apps
