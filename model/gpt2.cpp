// GPT-2 built from plain / RA attention and plain / R-MLP blocks.
#include <torch/torch.h>

#include "rakv/model/gpt2.h"

#include "activation_checkpoint.h"
#include "rakv/ops.h"
#include "rakv/nn/causal_self_attention.h"

namespace rakv::model {

int64_t GenerationCache::bytes() const {
  int64_t total = 0;
  for (const auto& layer : layers) total += layer.bytes();
  return total;
}

int64_t GenerationCache::full_bytes() const {
  int64_t total = 0;
  for (const auto& layer : layers) total += layer.full_bytes();
  return total;
}

void GenerationCache::reset() {
  for (auto& layer : layers) layer.clear();
  position = 0;
}

BlockImpl::BlockImpl(const GPT2Config& config, int64_t layer) {
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd})));
  if (config.attention[layer] == AttentionKind::kReciprocal) {
    nn::ReciprocalAttentionOptions options = config.ra;
    options.n_embd = config.n_embd;
    options.n_head = config.n_head;
    options.dropout = config.dropout;
    ra = nn::ReciprocalAttention(options);
    attn = ra.ptr();
  } else if (config.attention[layer] == AttentionKind::kPrunedKV) {
    nn::PrunedKVAttentionOptions options = config.pruned_kv;
    options.n_embd = config.n_embd;
    options.n_head = config.n_head;
    options.dropout = config.dropout;
    options.seed = config.pruned_kv.seed + static_cast<uint64_t>(layer) * 7919u;
    pruned_kv = nn::PrunedKVAttention(options);
    attn = pruned_kv.ptr();
  } else {
    nn::CausalSelfAttentionOptions options;
    options.n_embd = config.n_embd;
    options.n_head = config.n_head;
    options.dropout = config.dropout;
    attn = nn::CausalSelfAttention(options).ptr();
  }
  register_module("attn", attn);
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd})));
  if (config.mlp[layer] == MLPKind::kReciprocal) {
    nn::ReciprocalMLPOptions options = config.rmlp;
    options.n_embd = config.n_embd;
    options.expansion = config.mlp_expansion;
    options.dropout = config.dropout;
    rmlp = register_module("mlp", nn::ReciprocalMLP(options));
  } else {
    mlp = register_module("mlp", nn::MLP(nn::MLPOptions{config.n_embd, config.mlp_expansion,
                                                        config.dropout}));
  }
}

torch::Tensor BlockImpl::run_mlp(const torch::Tensor& x) {
  return rmlp ? rmlp->forward(x) : mlp->forward(x);
}

namespace {

// The module keeps the parameters (and their checkpoint names); ops::layer_norm runs the fused
// CUDA kernel, whose output is already in autocast's dtype.
torch::Tensor normalize(const torch::nn::LayerNorm& norm, const torch::Tensor& x) {
  return ops::layer_norm(x, norm->weight, norm->bias, norm->options.eps());
}

}  // namespace

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  const torch::Tensor h = x + attn->forward(normalize(ln_1, x));
  return h + run_mlp(normalize(ln_2, h));
}

torch::Tensor BlockImpl::forward_cached(const torch::Tensor& x, nn::LayerKVCache& cache) {
  const torch::Tensor h = x + attn->forward_cached(normalize(ln_1, x), cache);
  return h + run_mlp(normalize(ln_2, h));
}

GPT2Impl::GPT2Impl(const GPT2Config& config) : config_(config) {
  TORCH_CHECK(static_cast<int64_t>(config.attention.size()) == config.n_layer &&
                  static_cast<int64_t>(config.mlp.size()) == config.n_layer,
              "GPT2Config needs one attention and one MLP kind per layer");
  wte = register_module("wte", torch::nn::Embedding(config.vocab_size, config.n_embd));
  wpe = register_module("wpe", torch::nn::Embedding(config.block_size, config.n_embd));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t layer = 0; layer < config.n_layer; ++layer) {
    block_list_.push_back(Block(config, layer));
    blocks->push_back(block_list_.back());
  }
  ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd})));
  reset_weights();
}

void GPT2Impl::reset_weights() {
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    const bool is_norm = name.find("ln_") != std::string::npos;
    if (is_norm) {
      name.size() >= 4 && name.substr(name.size() - 4) == "bias" ? p.zero_() : p.fill_(1.0);
    } else if (p.dim() == 2 && name.find("mixer") == std::string::npos) {
      const bool residual = name.find("c_proj.weight") != std::string::npos;
      p.normal_(0.0, residual ? residual_std : 0.02);
    }
  }
  for (auto& block : block_list_) {
    if (block->ra) {
      block->ra->w_std.fill_(0.9);
      if (!block->ra->reciprocal_gates_frozen()) block->ra->w_rec.fill_(0.1);
      if (block->ra->self_restart_alpha.defined()) block->ra->self_restart_alpha.fill_(0.05);
    }
    if (block->rmlp) {
      block->rmlp->w_std.fill_(0.9);
      block->rmlp->w_rec.fill_(0.1);
      if (block->rmlp->gate_alpha.defined()) block->rmlp->gate_alpha.fill_(0.1);
      if (block->rmlp->mixer.defined()) {
        block->rmlp->mixer.copy_(torch::eye(block->rmlp->mixer.size(0)));
      }
    }
  }
}

void GPT2Impl::check_tokens(const torch::Tensor& idx, int64_t start) const {
  TORCH_CHECK(idx.dim() == 2 && idx.scalar_type() == torch::kInt64,
              "GPT-2 expects int64 token ids [B, T], got ", idx.scalar_type(), " ", idx.sizes());
  TORCH_CHECK(idx.size(1) >= 1, "GPT-2 needs at least one token per sequence");
  TORCH_CHECK(start + idx.size(1) <= config_.block_size, "sequence of ", start + idx.size(1),
              " tokens exceeds the block size ", config_.block_size, " (CONFIG_BLOCK_SIZE)");
  if (idx.device().is_cpu() && idx.numel() > 0) {
    const int64_t lo = idx.min().item<int64_t>();
    const int64_t hi = idx.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < config_.vocab_size, "token ids must be in [0, ",
                config_.vocab_size, "), got values in [", lo, ", ", hi, "]");
  }
}

torch::Tensor GPT2Impl::padded_head(const torch::Tensor& x) {
  // cuBLAS has no fast Hopper kernel for an output width like GPT-2's 50257: profiled on an H200,
  // the tied LM head then ran an sm75 fallback GEMM and took 30 of the step's 72 ms. Zero rows
  // pad the weight to a multiple of 64 (as llm.c pads to 50304).
  const int64_t padding = (64 - config_.vocab_size % 64) % 64;
  if (!x.is_cuda() || padding == 0) return torch::nn::functional::linear(normalize(ln_f, x), wte->weight);
  const torch::Tensor padded = torch::constant_pad_nd(wte->weight, {0, 0, 0, padding});
  return torch::nn::functional::linear(normalize(ln_f, x), padded);
}

torch::Tensor GPT2Impl::head(const torch::Tensor& x) {
  const torch::Tensor logits = padded_head(x);
  return logits.size(-1) == config_.vocab_size ? logits : logits.narrow(-1, 0, config_.vocab_size);
}

torch::Tensor GPT2Impl::hidden_states(const torch::Tensor& idx) {
  check_tokens(idx, 0);
  const torch::Tensor pos = torch::arange(idx.size(1), idx.options());
  torch::Tensor x = torch::dropout(wte(idx) + wpe(pos), config_.dropout, is_training());
  const bool checkpoint = config_.activation_checkpointing && is_training() &&
                          torch::GradMode::is_enabled();
  for (auto& block : block_list_) {
    x = checkpoint && x.requires_grad() ? checkpointed_block_forward(block, x) : block->forward(x);
  }
  return x;
}

torch::Tensor GPT2Impl::forward(const torch::Tensor& idx) { return head(hidden_states(idx)); }

torch::Tensor GPT2Impl::loss(const torch::Tensor& idx, const torch::Tensor& targets) {
  TORCH_CHECK(targets.sizes() == idx.sizes(), "targets ", targets.sizes(), " do not match inputs ",
              idx.sizes());
  // The fused loss reads the (bf16, under autocast) padded logits as they are: no float32 copy,
  // no cut to the vocabulary (the padding columns get zero gradient).
  return ops::cross_entropy_loss(padded_head(hidden_states(idx)), targets, config_.vocab_size);
}

GenerationCache GPT2Impl::new_cache(const std::vector<nn::KVCachePolicy>& policies) const {
  TORCH_CHECK(policies.empty() || static_cast<int64_t>(policies.size()) == config_.n_layer, "new_cache: ",
              policies.size(), " cache policies for ", config_.n_layer, " layers");
  GenerationCache cache;
  for (int64_t layer = 0; layer < config_.n_layer; ++layer) {
    cache.layers.emplace_back(policies.empty() ? nn::KVCachePolicy{} : policies[layer]);
  }
  return cache;
}

torch::Tensor GPT2Impl::forward_cached(const torch::Tensor& idx, GenerationCache& cache) {
  check_tokens(idx, cache.position);
  TORCH_CHECK(static_cast<int64_t>(cache.layers.size()) == config_.n_layer,
              "generation cache has ", cache.layers.size(), " layers, the model ", config_.n_layer);
  const torch::Tensor pos = torch::arange(cache.position, cache.position + idx.size(1), idx.options());
  torch::Tensor x = wte(idx) + wpe(pos);
  for (size_t layer = 0; layer < block_list_.size(); ++layer) {
    x = block_list_[layer]->forward_cached(x, cache.layers[layer]);
  }
  cache.position += idx.size(1);
  return head(x);
}

std::vector<nn::ReciprocalAttention> GPT2Impl::reciprocal_attention_layers() const {
  std::vector<nn::ReciprocalAttention> layers;
  for (const auto& block : block_list_) {
    if (block->ra) layers.push_back(block->ra);
  }
  return layers;
}

std::vector<nn::ReciprocalMLP> GPT2Impl::reciprocal_mlp_layers() const {
  std::vector<nn::ReciprocalMLP> layers;
  for (const auto& block : block_list_) {
    if (block->rmlp) layers.push_back(block->rmlp);
  }
  return layers;
}

std::vector<nn::PrunedKVAttention> GPT2Impl::pruned_kv_layers() const {
  std::vector<nn::PrunedKVAttention> layers;
  for (const auto& block : block_list_) {
    if (block->pruned_kv) layers.push_back(block->pruned_kv);
  }
  return layers;
}

std::vector<torch::Tensor> GPT2Impl::decayed_parameters() const {
  std::vector<torch::Tensor> params;
  for (const auto& item : named_parameters()) {
    if (item.value().dim() >= 2 && item.key().find("mixer") == std::string::npos) {
      params.push_back(item.value());
    }
  }
  return params;
}

std::vector<torch::Tensor> GPT2Impl::undecayed_parameters() const {
  std::vector<torch::Tensor> params;
  for (const auto& item : named_parameters()) {
    if (item.value().dim() < 2 || item.key().find("mixer") != std::string::npos) {
      params.push_back(item.value());
    }
  }
  return params;
}

}  // namespace rakv::model
