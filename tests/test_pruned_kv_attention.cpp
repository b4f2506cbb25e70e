// PrunedKVAttention: every mode against a float64 reference written from the formulas (with its
// own selection by a full sort), no leak from future tokens in any mode, gradients against
// autograd of the reference, the selection's budget and recency window, the EMA profile, and
// training a GPT-2 with pruned layers.
#include "rakv/nn/pruned_kv_attention.h"

#include <numeric>

#include "test_helpers.h"

namespace {

using rakv::nn::PrunedKVAttention;
using rakv::nn::PrunedKVAttentionOptions;
using rakv::nn::PruneMode;
using rakv::testing::relative_error;

constexpr PruneMode kAllModes[] = {PruneMode::kVOnly, PruneMode::kKVScoresReuse,
                                   PruneMode::kLegacy};

PrunedKVAttention make_layer(PruneMode mode, bool exposure = true, int64_t recency = 3) {
  PrunedKVAttentionOptions options;
  options.n_embd = 16;
  options.n_head = 2;
  options.mode = mode;
  options.keep_ratio = 0.4;
  options.k_min = 3;
  options.recency = recency;
  options.interval = 5;
  options.exposure_correction = exposure;
  PrunedKVAttention layer(options);
  torch::NoGradGuard no_grad;
  layer->c_attn->weight.normal_(0, 0.5);  // peaked attention makes the selection matter
  return layer;
}

// Keys kept for the queries of the chunk starting at s, by a full stable sort (value desc, index
// asc) after forcing the recency window: the selection written out from SPEC §3.
std::vector<int64_t> reference_kept(const std::vector<double>& importance, int64_t keep,
                                    int64_t recency) {
  const int64_t s = static_cast<int64_t>(importance.size());
  const int64_t forced = s > recency ? std::min(recency, keep) : 0;
  std::vector<int64_t> order(s - forced);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return importance[a] > importance[b]; });
  std::vector<int64_t> kept(order.begin(), order.begin() + (keep - forced));
  for (int64_t j = s - forced; j < s; ++j)
    kept.push_back(j);
  std::sort(kept.begin(), kept.end());
  return kept;
}

// The layer's output from the formulas in float64, differentiable in the two weights.
torch::Tensor reference_output(const torch::Tensor& x, const torch::Tensor& c_attn,
                               const torch::Tensor& c_proj, PrunedKVAttention& layer) {
  const auto& o = layer->options();
  const int64_t b_size = x.size(0), t = x.size(1), c = o.n_embd, h = o.n_head, d = c / h;
  const torch::Tensor qkv = torch::matmul(x.to(torch::kFloat64), c_attn.t());
  const auto heads = [&](int64_t i) {
    return qkv.narrow(-1, i * c, c).reshape({b_size, t, h, d}).permute({0, 2, 1, 3});
  };
  const torch::Tensor q = heads(0), k = heads(1), v = heads(2);
  const torch::Tensor scores =
      torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d));
  const torch::Tensor future = torch::ones({t, t}, torch::kBool).triu(1);
  const torch::Tensor probs = torch::softmax(scores.masked_fill(future, -INFINITY), -1);
  const int64_t chunk = layer->interval_for(t);
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < b_size; ++b) {
    std::vector<torch::Tensor> head_rows;
    for (int64_t hh = 0; hh < h; ++hh) {
      const torch::Tensor p = probs[b][hh].detach();
      std::vector<torch::Tensor> outs;
      for (int64_t i = 0; i < t; ++i) {
        const int64_t s = i / chunk * chunk;
        torch::Tensor visible = torch::zeros({t}, torch::kBool);
        visible.narrow(0, 0, i + 1).fill_(true);
        if (s > 0 && layer->keep_count(s) < s) {
          std::vector<double> importance(s);
          for (int64_t j = 0; j < s; ++j) {
            importance[j] = p.narrow(0, 0, s).select(1, j).sum().item<double>() /
                            static_cast<double>(o.exposure_correction ? s - j : s);
          }
          visible.narrow(0, 0, s).fill_(false);
          for (int64_t j : reference_kept(importance, layer->keep_count(s), o.recency))
            visible[j] = true;
        }
        const torch::Tensor weights =
            o.mode == PruneMode::kVOnly
                ? probs[b][hh][i] * visible.to(torch::kFloat64)
                : torch::softmax(
                      scores[b][hh][i].masked_fill(torch::logical_not(visible), -INFINITY), 0);
        outs.push_back(torch::matmul(weights, v[b][hh]));
      }
      head_rows.push_back(torch::stack(outs));
    }
    rows.push_back(torch::stack(head_rows));
  }
  const torch::Tensor out = torch::stack(rows).permute({0, 2, 1, 3}).reshape({b_size, t, c});
  return torch::matmul(out, c_proj.t());
}

class PrunedKVModes : public ::testing::TestWithParam<std::tuple<PruneMode, bool>> {};

TEST_P(PrunedKVModes, MatchesFloat64ReferenceOfItsFormula) {
  const auto [mode, exposure] = GetParam();
  torch::manual_seed(41);
  PrunedKVAttention layer = make_layer(mode, exposure);
  const torch::Tensor x = torch::randn({2, 23, 16});
  const torch::Tensor y = layer->forward(x);
  const torch::Tensor ref =
      reference_output(x, layer->c_attn->weight.detach().to(torch::kFloat64),
                       layer->c_proj->weight.detach().to(torch::kFloat64), layer);
  EXPECT_LT(relative_error(y, ref), 1e-5);
  // keep(s) = min(s, max(3, floor(0.4 s))) < s from the second chunk on.
  EXPECT_EQ(layer->last_selection().chunk_starts, (std::vector<int64_t>{5, 10, 15, 20}));
}

TEST_P(PrunedKVModes, GradientsMatchAutogradOfTheReference) {
  const auto [mode, exposure] = GetParam();
  torch::manual_seed(42);
  PrunedKVAttention layer = make_layer(mode, exposure);
  layer->to(torch::kFloat64);
  const torch::Tensor x = torch::randn({1, 17, 16}, torch::kFloat64);
  const torch::Tensor upstream = torch::randn({1, 17, 16}, torch::kFloat64);
  (layer->forward(x) * upstream).sum().backward();
  const torch::Tensor c_attn = layer->c_attn->weight.detach().clone().requires_grad_(true);
  const torch::Tensor c_proj = layer->c_proj->weight.detach().clone().requires_grad_(true);
  (reference_output(x, c_attn, c_proj, layer) * upstream).sum().backward();
  EXPECT_LT(relative_error(layer->c_attn->weight.grad(), c_attn.grad()), 1e-9);
  EXPECT_LT(relative_error(layer->c_proj->weight.grad(), c_proj.grad()), 1e-9);
}

// The reference chose the kept keys from the attention of all queries, so a query's output
// depended on the tokens after it; rakv chooses them from the earlier queries only.
TEST_P(PrunedKVModes, CausalFutureTokensNeverChangePastOutputs) {
  const auto [mode, exposure] = GetParam();
  torch::manual_seed(43);
  PrunedKVAttention layer = make_layer(mode, exposure);
  const torch::Tensor x = torch::randn({2, 30, 16});
  const torch::Tensor y = layer->forward(x);
  for (int64_t i : {3, 12, 21, 28}) {
    torch::Tensor changed = x.clone();
    changed.narrow(1, i + 1, 30 - i - 1).normal_();
    const torch::Tensor y2 = layer->forward(changed);
    EXPECT_TRUE(torch::allclose(y.narrow(1, 0, i + 1), y2.narrow(1, 0, i + 1), 0, 1e-6))
        << "position " << i;
    EXPECT_FALSE(torch::allclose(y.narrow(1, i + 1, 1), y2.narrow(1, i + 1, 1)));
  }
}

INSTANTIATE_TEST_SUITE_P(AllModes, PrunedKVModes,
                         ::testing::Combine(::testing::ValuesIn(kAllModes), ::testing::Bool()),
                         [](const auto& info) {
                           return rakv::nn::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_exposure" : "_plain");
                         });

TEST(PrunedKVAttention, KvScoresReuseAndLegacyAgree) {
  torch::manual_seed(44);
  PrunedKVAttention layer = make_layer(PruneMode::kKVScoresReuse);
  const torch::Tensor x = torch::randn({2, 26, 16});
  const torch::Tensor reuse = layer->forward(x);
  layer->set_mode(PruneMode::kLegacy);
  EXPECT_LT(relative_error(layer->forward(x), reuse), 1e-6);
}

TEST(PrunedKVAttention, SelectionKeepsTheBudgetAndTheRecencyWindow) {
  torch::manual_seed(45);
  PrunedKVAttention layer = make_layer(PruneMode::kVOnly, true, 2);
  layer->forward(torch::randn({3, 40, 16}));
  const auto& selection = layer->last_selection();
  ASSERT_FALSE(selection.kept.empty());
  for (size_t c = 0; c < selection.kept.size(); ++c) {
    const int64_t s = selection.chunk_starts[c];
    const torch::Tensor kept = selection.kept[c];
    EXPECT_EQ(kept.size(2), layer->keep_count(s));
    EXPECT_LT(kept.max().item<int64_t>(), s);
    EXPECT_TRUE(torch::equal(std::get<0>(kept.sort(-1)), kept));  // ascending
    EXPECT_TRUE(
        (kept.narrow(2, kept.size(2) - 2, 2) == torch::tensor({s - 2, s - 1})).all().item<bool>());
  }
}

TEST(PrunedKVAttention, ShortSequencesAreNotPruned) {
  torch::manual_seed(46);
  PrunedKVAttentionOptions options;
  options.n_embd = 16;
  options.n_head = 2;  // k_min 64: nothing is pruned below 64 keys
  PrunedKVAttention layer(options);
  const torch::Tensor x = torch::randn({1, 50, 16});
  layer->forward(x);
  EXPECT_TRUE(layer->last_selection().kept.empty());
}

TEST(PrunedKVAttention, EmaProfileBlendsAndResetsOnShapeChange) {
  torch::manual_seed(47);
  PrunedKVAttentionOptions options;
  options.n_embd = 16;
  options.n_head = 2;
  options.keep_ratio = 0.3;
  options.k_min = 2;
  options.recency = 1;
  options.interval = 4;
  options.ema_momentum = 0.9;
  options.ema_update_every = 1;
  PrunedKVAttention with_ema(options);
  options.ema_momentum = 0.0;
  PrunedKVAttention without(options);
  without->c_attn->weight.data().copy_(with_ema->c_attn->weight.data());
  without->c_proj->weight.data().copy_(with_ema->c_proj->weight.data());
  with_ema->train();
  // The first call has no profile yet: identical selections.
  const torch::Tensor x = torch::randn({2, 24, 16});
  EXPECT_TRUE(torch::equal(with_ema->forward(x), without->forward(x)));
  // Later calls blend the profile of earlier batches in, and the output changes.
  const torch::Tensor x2 = torch::randn({2, 24, 16});
  with_ema->forward(torch::randn({2, 24, 16}) * 3);
  EXPECT_FALSE(torch::equal(with_ema->forward(x2), without->forward(x2)));
  // Another length starts a fresh profile (no stale positions).
  const torch::Tensor x3 = torch::randn({2, 20, 16});
  EXPECT_TRUE(torch::equal(with_ema->forward(x3), without->forward(x3)));
}

TEST(PrunedKVAttention, BadOptionsGiveClearErrors) {
  PrunedKVAttentionOptions options;
  options.keep_ratio = 0;
  rakv::testing::expect_error_containing([&] { PrunedKVAttention{options}; },
                                         "keep ratio must be in (0, 1]");
  options.keep_ratio = 0.5;
  options.ema_momentum = 1.0;
  rakv::testing::expect_error_containing([&] { PrunedKVAttention{options}; },
                                         "EMA momentum must be in [0, 1)");
  rakv::testing::expect_error_containing([] { rakv::nn::parse_prune_mode("fast"); },
                                         "v_only, kv_scores_reuse or legacy");
}

// Chunks of different lengths, each over its own key set: forward and every gradient against
// autograd of the float64 formula (the path PrunedKV's pruned chunks take on the CPU).
TEST(ChunkedCausalAttention, MatchesTheFloat64ReferenceForwardAndBackward) {
  torch::manual_seed(81);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 5}, {7, 20}, {1, 9}, {16, 16}};
  std::vector<torch::Tensor> q, k, v;
  for (const auto& [rows, keys] : shapes) {
    q.push_back(torch::randn({2, 3, rows, 8}, torch::kFloat64).requires_grad_());
    k.push_back(torch::randn({2, 3, keys, 8}, torch::kFloat64).requires_grad_());
    v.push_back(torch::randn({2, 3, keys, 8}, torch::kFloat64).requires_grad_());
  }
  const std::vector<torch::Tensor> out = rakv::ops::chunked_causal_attention(q, k, v);
  ASSERT_EQ(out.size(), shapes.size());
  for (size_t c = 0; c < shapes.size(); ++c) {
    const torch::Tensor reference = rakv::testing::chunk_attention_reference(q[c], k[c], v[c]);
    EXPECT_LT(relative_error(out[c], reference), 1e-12) << c;
    const torch::Tensor upstream = torch::randn_like(reference);
    const auto got = torch::autograd::grad({out[c]}, {q[c], k[c], v[c]}, {upstream}, true);
    const auto want = torch::autograd::grad({reference}, {q[c], k[c], v[c]}, {upstream});
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_LT(relative_error(got[i], want[i]), 1e-12) << c << " input " << i;
    }
  }
}

TEST(ChunkedCausalAttention, RejectsMismatchedChunks) {
  const torch::Tensor q = torch::randn({1, 2, 4, 8});
  rakv::testing::expect_error_containing(
      [&] {
        rakv::ops::chunked_causal_attention({q}, {torch::randn({1, 2, 3, 8})},
                                            {torch::randn({1, 2, 3, 8})});
      },
      "has 4 queries but only 3 keys");
  rakv::testing::expect_error_containing([&] { rakv::ops::chunked_causal_attention({q}, {}, {}); },
                                         "got 1 query chunks but 0 key and 0 value sets");
}

// Sequences packed row after row: each equals the float64 reference of its own [1, H, L, D]
// attention, gradients included.
TEST(PackedCausalAttention, EverySequenceMatchesTheFloat64Reference) {
  torch::manual_seed(82);
  const std::vector<int64_t> q_lengths = {5, 0, 7, 1}, k_lengths = {5, 3, 20, 9};
  const torch::Tensor q = torch::randn({13, 3, 8}, torch::kFloat64).requires_grad_();
  const torch::Tensor k = torch::randn({37, 3, 8}, torch::kFloat64).requires_grad_();
  const torch::Tensor v = torch::randn({37, 3, 8}, torch::kFloat64).requires_grad_();
  const torch::Tensor out = rakv::ops::packed_causal_attention(q, k, v, q_lengths, k_lengths);
  ASSERT_EQ(out.sizes(), q.sizes());
  const torch::Tensor upstream = torch::randn_like(out);
  const auto got = torch::autograd::grad({out}, {q, k, v}, {upstream}, true);
  std::vector<torch::Tensor> pieces;
  int64_t q_row = 0, k_row = 0;
  const auto heads_first = [](const torch::Tensor& x) { return x.transpose(0, 1).unsqueeze(0); };
  for (size_t s = 0; s < q_lengths.size(); ++s) {
    pieces.push_back(rakv::testing::chunk_attention_reference(
                         heads_first(q.narrow(0, q_row, q_lengths[s])),
                         heads_first(k.narrow(0, k_row, k_lengths[s])),
                         heads_first(v.narrow(0, k_row, k_lengths[s])))
                         .squeeze(0)
                         .transpose(0, 1));
    q_row += q_lengths[s];
    k_row += k_lengths[s];
  }
  const torch::Tensor reference = torch::cat(pieces, 0);
  EXPECT_LT(relative_error(out, reference), 1e-12);
  const auto want = torch::autograd::grad({reference}, {q, k, v}, {upstream});
  for (size_t i = 0; i < 3; ++i)
    EXPECT_LT(relative_error(got[i], want[i]), 1e-12) << "input " << i;
}

TEST(PackedCausalAttention, RejectsLengthsThatDoNotFit) {
  const torch::Tensor q = torch::randn({4, 2, 8}), k = torch::randn({6, 2, 8});
  rakv::testing::expect_error_containing(
      [&] { rakv::ops::packed_causal_attention(q, k, k, {4}, {3}); },
      "sequence 0 has 4 queries and 3 keys (needs 0 <= queries <= keys)");
  rakv::testing::expect_error_containing(
      [&] { rakv::ops::packed_causal_attention(q, k, k, {2, 1}, {3, 2}); },
      "the lengths add up to 3 queries and 5 keys, but q has 4 rows and k 6");
  rakv::testing::expect_error_containing(
      [&] { rakv::ops::packed_causal_attention(q, k, k, {4}, {6, 0}); },
      "1 query lengths but 2 key lengths");
}

}  // namespace
