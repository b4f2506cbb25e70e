// Text generation with a KV cache: byte-level prompt in, sampled continuation out.
#pragma once

#include <cstdint>
#include <string>

#include "rakv/model/gpt2.h"

namespace rakv::apps {

struct SamplingOptions {
  int64_t tokens = 200;
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 40;        // 0: all tokens
  uint64_t seed = 1337;
};

struct GenerationResult {
  std::string text;              // the continuation (without the prompt)
  int64_t cache_bytes = 0;       // KV cache bytes held at the largest point of the generation
  int64_t full_cache_bytes = 0;  // what a plain cache of the same tokens holds
  double seconds = 0;
};

// Generates options.tokens bytes after `prompt` (empty: a newline). `policies` (one per layer, or
// empty) sets KV eviction and KVSplice compression. When the context reaches the block size, the
// cache is rebuilt from the last half block of tokens.
GenerationResult generate(model::GPT2& model, const std::string& prompt,
                          const SamplingOptions& options,
                          const std::vector<nn::KVCachePolicy>& policies = {});

}  // namespace rakv::apps
