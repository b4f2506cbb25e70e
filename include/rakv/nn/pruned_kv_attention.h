// PrunedKVAttention (SPEC §3): causal attention in which each query sees only a budget of the
// keys before it, chosen by their attention mass (importance), plus a recency window.
//
// Causality. The reference chose one set of keys per sequence from the attention paid by ALL
// queries, so which keys a query sees depended on the tokens after it (and it also left the
// causal mask out of the scores). rakv prunes the way a generating model with a budgeted KV cache
// does: the sequence is split into chunks of `interval` queries; the queries of chunk c (starting
// at position s) see the keys of their own chunk up to themselves, and, among the keys before s,
// the k_keep(s) = min(s, max(k_min, floor(s * keep_ratio))) most important ones, where importance
// is the attention mass the queries before s paid to each key:
//   importance(j) = sum_{i < s} P[i, j] / s,  or with exposure correction / (s - j),
// with P the causal softmax. The last min(recency, k_keep) keys before s are always kept. Nothing
// after a query influences its output (tests `...Causal...`), and since a query always sees
// itself, no query is ever left without a key.
//
// Modes (the same selection; they differ in how the kept keys are attended):
//   v_only          out_i = sum_{j visible} P[i, j] V_j, with P normalised over all keys j <= i
//                   (the pruned keys still take probability mass, but contribute no value);
//   kv_scores_reuse out_i = softmax over the visible keys only, times V;
//   legacy          the reference's name for the same result (it gathered the visible K and V and
//                   recomputed the smaller score product). rakv computes both that way: a pruned
//                   key's score is never needed.
// Memory. Every pruned chunk attends to its own key set (the causal prefix for v_only, the kept
// keys plus its own for the others); on CUDA in half precision all chunks run in one
// variable-length FlashAttention call (ops::chunked_causal_attention), so neither the forward
// nor the backward holds a [T, T] score, probability or mask tensor.
// Selection is not differentiated; gradients flow through the attention to Q, K and V.
#pragma once

#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

#include "rakv/nn/attention_layer.h"
#include "rakv/ops.h"

namespace rakv::nn {

enum class PruneMode { kVOnly, kKVScoresReuse, kLegacy };
PruneMode parse_prune_mode(const std::string& name);
std::string to_string(PruneMode mode);

struct PrunedKVAttentionOptions {
  int64_t n_embd = 128;
  int64_t n_head = 4;
  double dropout = 0.0;  // residual dropout
  PruneMode mode = PruneMode::kVOnly;
  double keep_ratio = 0.3819660112501051;  // 1 / (1 + golden ratio)
  int64_t k_min = 64;
  int64_t fixed_k_keep = 0;  // > 0: keep min(s, fixed_k_keep) keys instead of the ratio
  int64_t recency = 64;
  bool exposure_correction = true;
  // Chunk length between re-selections; 0 = automatic: max(recency, ceil(T / 32)).
  int64_t interval = 0;
  // EMA of a per-head positional importance profile, blended into the selection scores
  // (momentum m: score = (1 - m) * importance + m * profile); 0 disables. The profile is updated
  // every `ema_update_every` training calls from the batch mean, after that batch's selections,
  // and reset when T changes: a sequence's selection never uses its batch mates or its own future.
  double ema_momentum = 0.0;
  int64_t ema_update_every = 8;
  bool use_sampling = false;  // `sampling` selection when the prefix is longer than the threshold
  int64_t sampling_threshold = 4096;
  double sample_fraction = 0.02;
  uint64_t seed = 0;
};

class PrunedKVAttentionImpl : public AttentionLayer {
 public:
  explicit PrunedKVAttentionImpl(const PrunedKVAttentionOptions& options);

  // x: [B, T, C] -> [B, T, C].
  torch::Tensor forward(const torch::Tensor& x) override;
  // Generation attends over the whole cache; budgeted eviction lives in the KV cache.
  torch::Tensor forward_cached(const torch::Tensor& x, LayerKVCache& cache) override;

  // Keys kept for a prefix of length s (before the recency window is forced).
  int64_t keep_count(int64_t prefix) const;
  // The chunk length used for a sequence of T tokens.
  int64_t interval_for(int64_t t) const;

  // What the last forward selected: for each pruned chunk, its start and the kept key indices
  // (int64 [B, H, k], ascending). For tests and analysis.
  struct Selection {
    int64_t interval = 0;
    std::vector<int64_t> chunk_starts;
    std::vector<torch::Tensor> kept;
  };
  const Selection& last_selection() const { return last_selection_; }

  void set_mode(PruneMode mode) { options_.mode = mode; }
  const PrunedKVAttentionOptions& options() const { return options_; }

  torch::nn::Linear c_attn{nullptr};  // [3C, C]: rows Q, K, V
  torch::nn::Linear c_proj{nullptr};  // [C, C]

 private:
  // Importance of the keys before `prefix` for every (b, h) row, from the running sums of the
  // chunk masses ([B, H, chunks, T]).
  torch::Tensor prefix_importance(const torch::Tensor& cumulative_mass, int64_t chunk,
                                  int64_t prefix);
  torch::Tensor select(const torch::Tensor& importance, int64_t prefix);
  // Attention output [B, H, T - first_pruned, D] of the pruned chunks from first_pruned on.
  torch::Tensor pruned_chunks_attention(const torch::Tensor& q, const torch::Tensor& k,
                                        const torch::Tensor& v, const torch::Tensor& cumulative_mass,
                                        int64_t chunk, int64_t first_pruned);
  void update_ema(const torch::Tensor& cumulative_mass);

  PrunedKVAttentionOptions options_;
  Selection last_selection_;
  torch::Tensor ema_profile_;  // [H, T] or undefined
  int64_t calls_ = 0;
};
TORCH_MODULE(PrunedKVAttention);

}  // namespace rakv::nn
