// GPT-2 (pre-LayerNorm blocks, learned positions, tied LM head) whose layers each use plain or
// Reciprocal Attention and a plain or Reciprocal MLP.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/container/modulelist.h>

#include <memory>
#include <vector>

#include "rakv/config.h"
#include "rakv/nn/attention_layer.h"
#include "rakv/nn/mlp.h"
#include "rakv/nn/pruned_kv_attention.h"
#include "rakv/nn/reciprocal_attention.h"
#include "rakv/nn/reciprocal_mlp.h"

namespace rakv::model {

enum class AttentionKind { kPlain, kReciprocal, kPrunedKV };
enum class MLPKind { kPlain, kReciprocal };

struct GPT2Config {
  int64_t vocab_size = 256;
  int64_t block_size = 128;
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_embd = 128;
  int64_t mlp_expansion = 4;
  double dropout = 0.0;
  std::vector<AttentionKind> attention;  // one per layer
  std::vector<MLPKind> mlp;              // one per layer
  nn::ReciprocalAttentionOptions ra;     // n_embd, n_head, dropout are taken from above
  nn::ReciprocalMLPOptions rmlp;         // n_embd, expansion, dropout are taken from above
  nn::PrunedKVAttentionOptions pruned_kv;  // n_embd, n_head, dropout are taken from above
  // Keep only each block's input during training and recompute the block in the backward
  // (model/activation_checkpoint.cpp). Needs dropout 0 and no PrunedKV layer (both draw state
  // that a recompute would not replay).
  bool activation_checkpointing = false;
};

// Builds and validates the model configuration from CONFIG_ options; throws config::ConfigError
// naming the options at fault (e.g. n_embd not divisible by n_head, R >= head dim).
GPT2Config gpt2_config_from(const config::Config& config);

// Per-layer caches of one generation.
struct GenerationCache {
  std::vector<nn::LayerKVCache> layers;
  int64_t position = 0;  // tokens already processed
  int64_t bytes() const;       // held now (see LayerKVCache::bytes)
  int64_t full_bytes() const;  // a plain cache of the same tokens
  // Empties every layer, keeping its policy.
  void reset();
};

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const GPT2Config& config, int64_t layer);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor forward_cached(const torch::Tensor& x, nn::LayerKVCache& cache);

  torch::nn::LayerNorm ln_1{nullptr};
  torch::nn::LayerNorm ln_2{nullptr};
  std::shared_ptr<nn::AttentionLayer> attn;
  nn::ReciprocalAttention ra{nullptr};  // set when attn is RA
  nn::PrunedKVAttention pruned_kv{nullptr};  // set when attn is PrunedKV
  nn::MLP mlp{nullptr};
  nn::ReciprocalMLP rmlp{nullptr};

 private:
  torch::Tensor run_mlp(const torch::Tensor& x);
};
TORCH_MODULE(Block);

class GPT2Impl : public torch::nn::Module {
 public:
  explicit GPT2Impl(const GPT2Config& config);

  // idx: int64 [B, T] token ids, T <= block_size -> logits [B, T, vocab] (float32; bfloat16
  // under CUDA autocast).
  torch::Tensor forward(const torch::Tensor& idx);
  // Mean cross-entropy of forward(idx) against targets (int64 [B, T] in [0, vocab)), float32
  // 0-dim; computed by the fused ops::cross_entropy_loss.
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& targets);
  // Logits of the tokens idx [B, T_new] that follow those already in `cache`.
  torch::Tensor forward_cached(const torch::Tensor& idx, GenerationCache& cache);
  // One cache per layer; `policies` (one per layer, or empty for plain caches) sets eviction
  // and KVSplice compression.
  GenerationCache new_cache(const std::vector<nn::KVCachePolicy>& policies = {}) const;

  // Re-draws every weight: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)),
  // LayerNorms (1, 0), gates and mixers at their defaults. Uses the global torch generator.
  void reset_weights();

  std::vector<nn::ReciprocalAttention> reciprocal_attention_layers() const;
  std::vector<nn::ReciprocalMLP> reciprocal_mlp_layers() const;
  std::vector<nn::PrunedKVAttention> pruned_kv_layers() const;
  // Parameters that get weight decay (matrices and embeddings) and those that do not (gates,
  // norms, self-restart, coupling).
  std::vector<torch::Tensor> decayed_parameters() const;
  std::vector<torch::Tensor> undecayed_parameters() const;

  const GPT2Config& config() const { return config_; }
  torch::nn::Embedding wte{nullptr};
  torch::nn::Embedding wpe{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};

 private:
  // The last block's output [B, T, C] for idx [B, T].
  torch::Tensor hidden_states(const torch::Tensor& idx);
  // Logits [B, T, columns]: columns = vocab, or on CUDA vocab padded to a multiple of 64 (the
  // extra columns are zero); head() cuts them to vocab.
  torch::Tensor padded_head(const torch::Tensor& x);
  torch::Tensor head(const torch::Tensor& x);
  void check_tokens(const torch::Tensor& idx, int64_t start) const;
  GPT2Config config_;
  std::vector<Block> block_list_;
};
TORCH_MODULE(GPT2);

}  // namespace rakv::model
