// PrunedKVAttention: causal, chunk-wise KV pruning by attention mass (see the header for the
// semantics and how they differ from the reference).
#include <torch/torch.h>

#include "rakv/nn/pruned_kv_attention.h"

namespace rakv::nn {

PruneMode parse_prune_mode(const std::string& name) {
  if (name == "v_only")
    return PruneMode::kVOnly;
  if (name == "kv_scores_reuse")
    return PruneMode::kKVScoresReuse;
  if (name == "legacy")
    return PruneMode::kLegacy;
  TORCH_CHECK(false, "unknown KV pruning mode '", name,
              "' (expected v_only, kv_scores_reuse or legacy)");
}

std::string to_string(PruneMode mode) {
  switch (mode) {
    case PruneMode::kVOnly:
      return "v_only";
    case PruneMode::kKVScoresReuse:
      return "kv_scores_reuse";
    case PruneMode::kLegacy:
      return "legacy";
  }
  return "?";
}

PrunedKVAttentionImpl::PrunedKVAttentionImpl(const PrunedKVAttentionOptions& options)
    : options_(options) {
  TORCH_CHECK(options.n_head > 0 && options.n_embd % options.n_head == 0, "n_embd (",
              options.n_embd, ") must be divisible by n_head (", options.n_head, ")");
  TORCH_CHECK(options.keep_ratio > 0 && options.keep_ratio <= 1,
              "KV keep ratio must be in (0, 1], got ", options.keep_ratio);
  TORCH_CHECK(options.k_min >= 1, "KV k_min must be >= 1, got ", options.k_min);
  TORCH_CHECK(options.fixed_k_keep >= 0, "fixed k_keep must be >= 0, got ", options.fixed_k_keep);
  TORCH_CHECK(options.recency >= 0, "KV recency window must be >= 0, got ", options.recency);
  TORCH_CHECK(options.interval >= 0, "KV pruning interval must be >= 0, got ", options.interval);
  TORCH_CHECK(options.ema_momentum >= 0 && options.ema_momentum < 1,
              "EMA momentum must be in [0, 1), got ", options.ema_momentum);
  TORCH_CHECK(options.ema_update_every >= 1, "EMA update interval must be >= 1");
  TORCH_CHECK(options.sample_fraction > 0 && options.sample_fraction <= 1,
              "sample fraction must be in (0, 1], got ", options.sample_fraction);
  const int64_t c = options.n_embd;
  c_attn =
      register_module("c_attn", torch::nn::Linear(torch::nn::LinearOptions(c, 3 * c).bias(false)));
  c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(c, c).bias(false)));
}

int64_t PrunedKVAttentionImpl::keep_count(int64_t prefix) const {
  if (options_.fixed_k_keep > 0)
    return std::min(prefix, options_.fixed_k_keep);
  return ops::kv_keep_count(prefix, options_.keep_ratio, options_.k_min);
}

int64_t PrunedKVAttentionImpl::interval_for(int64_t t) const {
  if (options_.interval > 0)
    return options_.interval;
  return std::max<int64_t>({1, options_.recency, (t + 31) / 32});
}

torch::Tensor PrunedKVAttentionImpl::prefix_importance(const torch::Tensor& cumulative_mass,
                                                       int64_t chunk, int64_t prefix) {
  // Mass the queries before `prefix` (whole chunks, since prefix is a chunk start) paid each key.
  const torch::Tensor mass = cumulative_mass.select(2, prefix / chunk - 1).narrow(2, 0, prefix);
  torch::Tensor denominator;
  if (options_.exposure_correction) {
    denominator = (prefix - torch::arange(prefix, mass.options()));  // queries i in [j, prefix)
  } else {
    denominator = torch::full({prefix}, static_cast<double>(prefix), mass.options());
  }
  torch::Tensor importance = mass / denominator;
  if (options_.ema_momentum > 0 && ema_profile_.defined() && ema_profile_.size(1) >= prefix) {
    const double m = options_.ema_momentum;
    importance = (1 - m) * importance +
                 m * ema_profile_.narrow(1, 0, prefix).unsqueeze(0).to(importance.dtype());
  }
  return importance;
}

torch::Tensor PrunedKVAttentionImpl::select(const torch::Tensor& importance, int64_t prefix) {
  const bool sample = options_.use_sampling && prefix > options_.sampling_threshold;
  // No NaN check (a host synchronisation per chunk on CUDA): a NaN importance comes from a NaN
  // query or key, which the attention output, and so the loss, carries anyway.
  return ops::kv_select(importance.contiguous(), keep_count(prefix), options_.recency,
                        sample ? ops::TopkMethod::kSampling : ops::TopkMethod::kExact,
                        options_.sample_fraction, options_.seed + static_cast<uint64_t>(calls_),
                        ops::NanPolicy::kPropagate);
}

void PrunedKVAttentionImpl::update_ema(const torch::Tensor& cumulative_mass) {
  const int64_t t = cumulative_mass.size(3);
  if (ema_profile_.defined() && calls_ % options_.ema_update_every != 0)
    return;
  const torch::Tensor mass = cumulative_mass.select(2, -1);  // every chunk's
  const torch::Tensor denominator = options_.exposure_correction
                                        ? (t - torch::arange(t, mass.options()))
                                        : torch::full({t}, static_cast<double>(t), mass.options());
  const torch::Tensor current = (mass / denominator).mean(0);  // [H, T]
  const double m = options_.ema_momentum;
  ema_profile_ = ema_profile_.defined() ? m * ema_profile_ + (1 - m) * current : current;
}

// Each pruned chunk attends to its own key set, whose last keys are the chunk's own positions.
// Every (chunk, sequence) pair is one sequence of a packed variable-length attention, its rows
// gathered with one index per tensor (a copy per chunk, and a zero-filled gradient per chunk in
// the backward, cost more than the attention at long context).
torch::Tensor PrunedKVAttentionImpl::pruned_chunks_attention(const torch::Tensor& q,
                                                             const torch::Tensor& k,
                                                             const torch::Tensor& v,
                                                             const torch::Tensor& cumulative_mass,
                                                             int64_t chunk, int64_t first_pruned) {
  const int64_t batch = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3);
  // [B, H, T, D] -> [B * T, H, D]: position i of sequence b is row b * T + i.
  const auto rows_first = [](const torch::Tensor& y) {
    return y.transpose(1, 2).reshape({-1, y.size(1), y.size(3)});
  };
  const auto index_options = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
  const torch::Tensor sequence = torch::arange(batch, index_options);
  const torch::Tensor head = torch::arange(h, index_options).view({1, h, 1});
  const torch::Tensor first_row = (sequence * t).view({batch, 1});
  std::vector<int64_t> q_lengths, k_lengths;
  std::vector<torch::Tensor> q_rows, k_rows, keep_flat, unpack;
  int64_t packed_queries = 0, packed_keys = 0;
  for (int64_t s = first_pruned; s < t; s += chunk) {
    const int64_t rows = std::min(chunk, t - s);
    const int64_t end = s + rows;
    torch::Tensor kept;
    {
      torch::NoGradGuard no_grad;
      kept = select(prefix_importance(cumulative_mass, chunk, s), s);
    }
    last_selection_.chunk_starts.push_back(s);
    last_selection_.kept.push_back(kept);
    const torch::Tensor own = torch::arange(s, end, index_options);
    q_rows.push_back((first_row + own.view({1, rows})).view(-1));
    unpack.push_back((packed_queries + sequence * rows).view({batch, 1}) +
                     torch::arange(rows, index_options).view({1, rows}));
    packed_queries += batch * rows;
    if (options_.mode == PruneMode::kVOnly) {
      // Normalised over every causal key; only the kept ones (and the chunk's own) contribute a
      // value: the keys are the whole prefix, a mask picks the values.
      k_rows.push_back((first_row + torch::arange(end, index_options).view({1, end})).view(-1));
      const torch::Tensor set_start = (packed_keys + sequence * end).view({batch, 1, 1});
      keep_flat.push_back(((kept + set_start) * h + head).view(-1));
      keep_flat.push_back(((own.view({1, 1, rows}) + set_start) * h + head).view(-1));
      q_lengths.insert(q_lengths.end(), batch, rows);
      k_lengths.insert(k_lengths.end(), batch, end);
      packed_keys += batch * end;
    } else {
      // kv_scores_reuse and legacy: the softmax over the kept keys only, so only they are gathered
      // (a pruned key's score would be masked out anyway), then the chunk's own.
      const torch::Tensor kept_rows = (kept + first_row.view({batch, 1, 1})).transpose(1, 2);
      const torch::Tensor own_rows =
          (first_row + own.view({1, rows})).unsqueeze(-1).expand({batch, rows, h});
      k_rows.push_back(torch::cat({kept_rows, own_rows}, 1).reshape({-1, h}));
      q_lengths.insert(q_lengths.end(), batch, rows);
      k_lengths.insert(k_lengths.end(), batch, kept.size(2) + rows);
    }
  }
  const torch::Tensor q_packed = rows_first(q).index_select(0, torch::cat(q_rows));
  torch::Tensor k_packed, v_packed;
  if (options_.mode == PruneMode::kVOnly) {
    const torch::Tensor index = torch::cat(k_rows);
    torch::Tensor keep =
        torch::zeros({index.size(0) * h}, torch::TensorOptions().dtype(torch::kBool).device(q.device()));
    keep.index_fill_(0, torch::cat(keep_flat), true);
    k_packed = rows_first(k).index_select(0, index);
    v_packed = rows_first(v).index_select(0, index) * keep.view({-1, h, 1}).to(v.scalar_type());
  } else {
    const torch::Tensor index = torch::cat(k_rows).unsqueeze(-1).expand({-1, h, d});
    k_packed = rows_first(k).gather(0, index);
    v_packed = rows_first(v).gather(0, index);
  }
  const torch::Tensor packed =
      ops::packed_causal_attention(q_packed, k_packed, v_packed, q_lengths, k_lengths);
  // Packed rows run (chunk, sequence, position): back to [B, H, T - first_pruned, D].
  const torch::Tensor by_position =
      batch == 1 ? packed : packed.index_select(0, torch::cat(unpack, 1).view(-1));
  return by_position.view({batch, t - first_pruned, h, d}).transpose(1, 2);
}

torch::Tensor PrunedKVAttentionImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options_.n_embd, "PrunedKVAttention expects x [B, T, ",
              options_.n_embd, "], got ", x.sizes());
  const int64_t h = options_.n_head;
  const int64_t t = x.size(1);
  const auto qkv = c_attn(x).split(options_.n_embd, -1);
  const torch::Tensor q = ops::split_heads(qkv[0], h);
  const torch::Tensor k = ops::split_heads(qkv[1], h);
  const torch::Tensor v = ops::split_heads(qkv[2], h);

  const int64_t chunk = interval_for(t);
  last_selection_ = Selection{};
  last_selection_.interval = chunk;
  // The first chunk start at which the budget is smaller than the prefix; before it, plain
  // attention.
  int64_t first_pruned = t;
  for (int64_t s = chunk; s < t; s += chunk) {
    if (keep_count(s) < s) {
      first_pruned = s;
      break;
    }
  }
  const bool update_profile = is_training() && options_.ema_momentum > 0;
  // [B, H, chunks, T]: the mass paid by the chunks up to c (one running sum serves every prefix
  // and the EMA profile).
  torch::Tensor cumulative_mass;
  if (first_pruned < t || update_profile) {
    torch::NoGradGuard no_grad;
    cumulative_mass = ops::kv_chunk_column_mass(q.detach(), k.detach(), chunk).cumsum(2);
  }
  if (ema_profile_.defined() && ema_profile_.size(1) != t)
    ema_profile_ = torch::Tensor();

  std::vector<torch::Tensor> outputs;
  if (first_pruned > 0) {
    outputs.push_back(ops::causal_attention(q.narrow(2, 0, first_pruned),
                                            k.narrow(2, 0, first_pruned),
                                            v.narrow(2, 0, first_pruned), 0.0));
  }
  if (first_pruned < t)
    outputs.push_back(pruned_chunks_attention(q, k, v, cumulative_mass, chunk, first_pruned));
  // The profile learns from this batch only after its selections: a sequence never sees the
  // importance of its batch mates or of its own future.
  if (update_profile) {
    torch::NoGradGuard no_grad;
    update_ema(cumulative_mass);
  }
  ++calls_;
  const torch::Tensor out = outputs.size() == 1 ? outputs[0] : torch::cat(outputs, 2);
  return torch::dropout(c_proj(ops::merge_heads(out)), options_.dropout, is_training());
}

torch::Tensor PrunedKVAttentionImpl::forward_cached(const torch::Tensor& x, LayerKVCache& cache) {
  const auto qkv = c_attn(x).split(options_.n_embd, -1);
  cache.append(ops::split_heads(qkv[1], options_.n_head),
               ops::split_heads(qkv[2], options_.n_head));
  const torch::Tensor out = cache.attend(ops::split_heads(qkv[0], options_.n_head));
  return c_proj(ops::merge_heads(out));
}

}  // namespace rakv::nn
