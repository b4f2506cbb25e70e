// Sampling from a GPT-2 with a KV cache.
#include <torch/torch.h>

#include <chrono>

#include "rakv/apps/generate.h"

namespace rakv::apps {

namespace {

int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& options) {
  if (options.temperature <= 0) return logits.argmax(-1).item<int64_t>();
  torch::Tensor scaled = logits.to(torch::kFloat32) / options.temperature;
  if (options.top_k > 0 && options.top_k < scaled.size(-1)) {
    const torch::Tensor kth = std::get<0>(scaled.topk(options.top_k, -1)).select(-1, options.top_k - 1);
    scaled = scaled.masked_fill(scaled < kth.unsqueeze(-1), -std::numeric_limits<float>::infinity());
  }
  return torch::multinomial(torch::softmax(scaled, -1), 1).item<int64_t>();
}

}  // namespace

GenerationResult generate(model::GPT2& model, const std::string& prompt, const SamplingOptions& options,
                          const std::vector<nn::KVCachePolicy>& policies) {
  TORCH_CHECK(options.tokens >= 0, "number of tokens to generate must be >= 0, got ", options.tokens);
  TORCH_CHECK(options.temperature >= 0, "temperature must be >= 0, got ", options.temperature);
  TORCH_CHECK(options.top_k >= 0, "top-k must be >= 0, got ", options.top_k);
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  model->eval();
  torch::manual_seed(options.seed);
  const int64_t block = model->config().block_size;
  const torch::Device device = model->wte->weight.device();

  std::vector<int64_t> context;
  for (unsigned char c : prompt.empty() ? std::string("\n") : prompt) context.push_back(c);
  // A prompt longer than the context keeps its end.
  if (static_cast<int64_t>(context.size()) > block) context.erase(context.begin(), context.end() - block);

  model::GenerationCache cache = model->new_cache(policies);
  auto prefill = [&](int64_t keep) {
    cache.reset();
    std::vector<int64_t> tail(context.end() - keep, context.end());
    const torch::Tensor idx = torch::tensor(tail, torch::kInt64).unsqueeze(0).to(device);
    return model->forward_cached(idx, cache).select(1, -1).squeeze(0);
  };
  torch::Tensor logits = prefill(static_cast<int64_t>(context.size()));

  GenerationResult result;
  int64_t peak_bytes = cache.bytes();
  int64_t peak_full_bytes = cache.full_bytes();
  for (int64_t i = 0; i < options.tokens; ++i) {
    const int64_t token = sample_token(logits, options);
    result.text.push_back(static_cast<char>(token));
    context.push_back(token);
    if (i + 1 == options.tokens) break;
    if (cache.position >= block) {
      // Positions are learned up to block_size: restart the cache from the last half block.
      logits = prefill(std::max<int64_t>(1, block / 2));
    } else {
      const torch::Tensor idx = torch::tensor({token}, torch::kInt64).view({1, 1}).to(device);
      logits = model->forward_cached(idx, cache).select(1, -1).squeeze(0);
    }
    if (cache.full_bytes() >= peak_full_bytes) {
      peak_bytes = std::max(peak_bytes, cache.bytes());
      peak_full_bytes = cache.full_bytes();
    }
  }
  result.cache_bytes = peak_bytes;
  result.full_cache_bytes = peak_full_bytes;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace rakv::apps
