// KV-cache compression for a trained model: one KVSplice per layer, fitted on the model's own V
// vectors, saved together in one safetensors file; and the per-layer cache policies (eviction
// budget, KVSplice) that `rakv generate` and `rakv eval` use.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "rakv/config.h"
#include "rakv/model/gpt2.h"
#include "rakv/nn/kvsplice.h"

namespace rakv::apps {

inline constexpr const char* kKVSpliceSetFormat = "rakv-kvsplice-set/1";

// A KVSplice per model layer (all with the same head dim and latent size).
struct KVSpliceSet {
  std::vector<nn::KVSplice> layers;
  int64_t head_dim = 0;
  int64_t latent_dim = 0;
};

void save_kvsplice_set(const std::string& path, const KVSpliceSet& set);
// Reads a set and checks that it fits `model` (number of layers and head dim), naming both when
// it does not.
KVSpliceSet load_kvsplice_set(const std::string& path, const model::GPT2Config& model);

// The V vectors every layer produces on `tokens` tokens of `text` (windows of the block size, a
// fresh context each): one [N * H, D] tensor per layer.
std::vector<torch::Tensor> collect_layer_values(model::GPT2& model,
                                                const std::vector<uint8_t>& text, int64_t tokens);

struct CalibrationOptions {
  int64_t tokens = 8192;
  int64_t latent_dim = 16;
  int64_t knots = 7;
  nn::KVSpliceFitOptions fit;
  bool plain_pca = false;
};

// Fits one KVSplice per layer on the model's V vectors over `text`; logs one line per layer.
KVSpliceSet calibrate_kvsplice(model::GPT2& model, const std::vector<uint8_t>& text,
                               const CalibrationOptions& options, std::ostream& log);

// Per-layer cache policies: eviction to `keep_ratio` with the PrunedKV selection parameters of
// `config` (CONFIG_KV_K_MIN, CONFIG_KV_RECENCY, CONFIG_KV_PRUNE_INTERVAL (0: 64),
// CONFIG_KV_EXPOSURE_CORRECT), and the set's KVSplice per layer when `set` is given.
std::vector<nn::KVCachePolicy> cache_policies(const config::Config& config, int64_t n_layer,
                                              double keep_ratio, const KVSpliceSet* set);

// The cache policies of a generation with `model` trained with `config`: the budget, and a
// KVSplice per layer read from `kvsplice_file`, or, when that is empty and CONFIG_KVSPLICE=y,
// fitted now on the training text (said on `log`).
std::vector<nn::KVCachePolicy> generation_policies(model::GPT2& model, const config::Config& config,
                                                   double budget, const std::string& kvsplice_file,
                                                   std::ostream& log);

}  // namespace rakv::apps
