// Reciprocal Attention against a float64 reference written from SPEC §1's logit formula, the
// three gate-scaling implementations against each other, gradients against finite differences,
// causality, the repack from plain weights, and bad input.
#include "rakv/nn/reciprocal_attention.h"

#include "rakv/ops.h"
#include "test_helpers.h"

namespace {

using rakv::nn::GateScaling;
using rakv::nn::ReciprocalAttention;
using rakv::nn::ReciprocalAttentionOptions;
using rakv::testing::expect_error_containing;
using rakv::testing::finite_difference;
using rakv::testing::relative_error;

constexpr GateScaling kAllScalings[] = {GateScaling::kSplitCat, GateScaling::kScaleTensor,
                                        GateScaling::kFused};

// y from the spec's formula, in float64: logits_ij = w_std <Q_std,i, K_std,j> +
// w_rec <K_low,i, Q_low,j> (with w clamped at 1e-8), / sqrt(D), causal softmax, times V,
// optional self-restart, merged heads times c_proj^T. Independent of the folded-q.k code path.
torch::Tensor reference_ra(const torch::Tensor& x, ReciprocalAttention& layer) {
  const auto& o = layer->options();
  const int64_t b = x.size(0), t = x.size(1), c = o.n_embd, h = o.n_head, d = c / h;
  const int64_t r = o.reciprocal_rank, d_std = d - r;
  const auto f64 = [](const torch::Tensor& v) { return v.detach().to(torch::kFloat64); };
  const torch::Tensor qkv = torch::matmul(f64(x), f64(layer->c_attn->weight).t());
  const auto heads = [&](int64_t i) {
    return qkv.narrow(-1, i * c, c).reshape({b, t, h, d}).permute({0, 2, 1, 3});
  };
  const torch::Tensor qf = heads(0), kf = heads(1), v = heads(2);
  const torch::Tensor q_std = qf.narrow(-1, 0, d_std), k_low = qf.narrow(-1, d_std, r);
  const torch::Tensor k_std = kf.narrow(-1, 0, d_std), q_low = kf.narrow(-1, d_std, r);
  const std::vector<int64_t> gate_shape = {1, layer->w_std.size(0), 1, 1};
  const torch::Tensor w_std = f64(layer->w_std).clamp_min(1e-8).view(gate_shape);
  const torch::Tensor w_rec = f64(layer->w_rec).clamp_min(1e-8).view(gate_shape);
  torch::Tensor logits = w_std * torch::einsum("bhid,bhjd->bhij", {q_std, k_std}) +
                         w_rec * torch::einsum("bhid,bhjd->bhij", {k_low, q_low});
  logits = logits / std::sqrt(static_cast<double>(d));
  const torch::Tensor future = torch::ones({t, t}, torch::kBool).triu(1);
  torch::Tensor out = torch::matmul(torch::softmax(logits.masked_fill(future, -INFINITY), -1), v);
  if (o.self_restart) {
    const torch::Tensor a = f64(layer->self_restart_alpha).clamp(0.0, 0.5).view({1, h, 1, 1});
    out = (1 - a) * out + a * v;
  }
  out = out.permute({0, 2, 1, 3}).reshape({b, t, c});
  return torch::matmul(out, f64(layer->c_proj->weight).t());
}

// Gates away from their init (and per head distinct) so that a mix-up would show.
void randomise_gates(ReciprocalAttention& layer) {
  torch::NoGradGuard no_grad;
  layer->w_std.uniform_(0.5, 1.5);
  layer->w_rec.uniform_(0.05, 0.5);
  if (layer->self_restart_alpha.defined()) layer->self_restart_alpha.uniform_(0.05, 0.45);
}

ReciprocalAttention make_layer(bool per_head, bool self_restart, GateScaling scaling,
                               int64_t c = 48, int64_t h = 4, int64_t r = 3) {
  ReciprocalAttentionOptions options;
  options.n_embd = c;
  options.n_head = h;
  options.reciprocal_rank = r;
  options.per_head_gates = per_head;
  options.self_restart = self_restart;
  options.gate_scaling = scaling;
  ReciprocalAttention layer(options);
  randomise_gates(layer);
  return layer;
}

class RAVariants : public ::testing::TestWithParam<std::tuple<bool, bool, GateScaling>> {};

TEST_P(RAVariants, MatchesFloat64Reference) {
  const auto [per_head, self_restart, scaling] = GetParam();
  torch::manual_seed(1);
  ReciprocalAttention layer = make_layer(per_head, self_restart, scaling);
  const torch::Tensor x = torch::randn({2, 13, 48});
  const torch::Tensor y = layer->forward(x);
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
  EXPECT_LT(relative_error(y, reference_ra(x, layer)), 2e-6);
}

TEST_P(RAVariants, GateGradientsMatchFiniteDifferencesInFloat64) {
  const auto [per_head, self_restart, scaling] = GetParam();
  torch::manual_seed(2);
  ReciprocalAttention layer = make_layer(per_head, self_restart, scaling, 24, 2, 4);
  layer->to(torch::kFloat64);
  const torch::Tensor x = torch::randn({2, 7, 24}, torch::kFloat64);
  const torch::Tensor weights = torch::randn({2, 7, 24}, torch::kFloat64);
  const auto loss = [&] { return (layer->forward(x) * weights).sum(); };
  const auto value = [&] { return loss().item<double>(); };
  std::vector<torch::Tensor> gates = {layer->w_std, layer->w_rec};
  if (self_restart) gates.push_back(layer->self_restart_alpha);
  const auto grads = torch::autograd::grad({loss()}, gates);
  for (size_t i = 0; i < gates.size(); ++i) {
    SCOPED_TRACE("gate " + std::to_string(i));
    EXPECT_LT(relative_error(grads[i], finite_difference(value, gates[i])), 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(AllGateOptions, RAVariants,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(),
                                            ::testing::ValuesIn(kAllScalings)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "PerHead" : "Scalar") +
                                  (std::get<1>(info.param) ? "SelfRestart" : "") + "_" +
                                  rakv::nn::to_string(std::get<2>(info.param));
                         });

// The three gate-scaling implementations: equal outputs and equal gradients of every parameter.
class RAScalingsAgree : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(RAScalingsAgree, OutputAndEveryGradient) {
  const auto [per_head, self_restart] = GetParam();
  torch::manual_seed(3);
  ReciprocalAttention layer = make_layer(per_head, self_restart, GateScaling::kSplitCat);
  const torch::Tensor x = torch::randn({3, 17, 48});
  const torch::Tensor upstream = torch::randn({3, 17, 48});
  std::map<std::string, torch::Tensor> ref_grads;
  torch::Tensor ref_out;
  for (GateScaling scaling : kAllScalings) {
    SCOPED_TRACE(rakv::nn::to_string(scaling));
    layer->set_gate_scaling(scaling);
    layer->zero_grad();
    const torch::Tensor y = layer->forward(x);
    (y * upstream).sum().backward();
    if (scaling == GateScaling::kSplitCat) {
      ref_out = y.detach();
      for (const auto& p : layer->named_parameters()) ref_grads[p.key()] = p.value().grad().clone();
      continue;
    }
    EXPECT_LT(relative_error(y, ref_out), 1e-6);
    for (const auto& p : layer->named_parameters()) {
      SCOPED_TRACE(p.key());
      ASSERT_TRUE(p.value().grad().defined());
      EXPECT_LT(relative_error(p.value().grad(), ref_grads[p.key()]), 2e-5);
    }
  }
  EXPECT_EQ(ref_grads.size(), self_restart ? 5u : 4u);  // c_attn, c_proj, w_std, w_rec[, alpha]
}

INSTANTIATE_TEST_SUITE_P(AllGateOptions, RAScalingsAgree,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "PerHead" : "Scalar") +
                                  (std::get<1>(info.param) ? "SelfRestart" : "");
                         });

TEST(ReciprocalAttention, CausalFutureTokensNeverChangePastOutputs) {
  torch::manual_seed(4);
  for (GateScaling scaling : kAllScalings) {
    ReciprocalAttention layer = make_layer(true, true, scaling);
    const torch::Tensor x = torch::randn({2, 20, 48});
    const torch::Tensor y = layer->forward(x);
    for (int64_t i : {0, 7, 18}) {
      torch::Tensor changed = x.clone();
      changed.narrow(1, i + 1, 20 - i - 1).normal_();
      const torch::Tensor y2 = layer->forward(changed);
      EXPECT_TRUE(torch::allclose(y.narrow(1, 0, i + 1), y2.narrow(1, 0, i + 1), 0, 1e-6))
          << rakv::nn::to_string(scaling) << " position " << i;
      EXPECT_FALSE(torch::allclose(y.narrow(1, i + 1, 1), y2.narrow(1, i + 1, 1)));
    }
  }
}

TEST(ReciprocalAttention, CachedForwardEqualsFullForward) {
  torch::manual_seed(5);
  for (GateScaling scaling : kAllScalings) {
    ReciprocalAttention layer = make_layer(true, true, scaling);
    const torch::Tensor x = torch::randn({2, 11, 48});
    const torch::Tensor full = layer->forward(x);
    rakv::nn::LayerKVCache cache;
    std::vector<torch::Tensor> parts = {layer->forward_cached(x.narrow(1, 0, 5), cache)};
    for (int64_t t = 5; t < 11; ++t) parts.push_back(layer->forward_cached(x.narrow(1, t, 1), cache));
    EXPECT_LT(relative_error(torch::cat(parts, 1), full), 1e-6) << rakv::nn::to_string(scaling);
    EXPECT_EQ(cache.length(), 11);
  }
}

// Plain per-head W_q, W_k, W_v repacked into the folded layout: the RA logits must be
// w_std <q_std,i, k_std,j> + w_rec <k_low,i, q_low,j> of the plain projections, with each gate
// applied once. The reference also multiplied the repacked rows by the gates (double gating),
// which would give w_std^2 <q_std, k_std> here.
TEST(ReciprocalAttention, RepackFromPlainWeightsGatesOnce) {
  torch::manual_seed(6);
  const int64_t c = 32, h = 2, d = 16, r = 4, d_std = d - r, t = 9;
  ReciprocalAttention layer = make_layer(false, false, GateScaling::kFused, c, h, r);
  const torch::Tensor w_q = torch::randn({c, c}) * 0.2, w_k = torch::randn({c, c}) * 0.2,
                      w_v = torch::randn({c, c}) * 0.2;
  layer->load_plain_qkv(w_q, w_k, w_v);
  const torch::Tensor x = torch::randn({1, t, c});
  const auto heads = [&](const torch::Tensor& w) {
    return torch::matmul(x, w.t()).reshape({1, t, h, d}).permute({0, 2, 1, 3}).to(torch::kFloat64);
  };
  const torch::Tensor q = heads(w_q), k = heads(w_k);
  const torch::Tensor std_term =
      torch::einsum("bhid,bhjd->bhij", {q.narrow(-1, 0, d_std), k.narrow(-1, 0, d_std)});
  const torch::Tensor rec_term =
      torch::einsum("bhid,bhjd->bhij", {k.narrow(-1, d_std, r), q.narrow(-1, d_std, r)});
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  {
    torch::NoGradGuard no_grad;
    layer->w_std.fill_(1.0);
    layer->w_rec.fill_(0.0);
  }
  // w_rec = 0 is clamped to 1e-8: the reciprocal term vanishes to ~1e-8 of its size.
  EXPECT_LT(relative_error(layer->logits(x), std_term * scale), 1e-5);
  {
    torch::NoGradGuard no_grad;
    layer->w_std.fill_(0.9);
    layer->w_rec.fill_(0.1);
  }
  for (GateScaling scaling : kAllScalings) {
    layer->set_gate_scaling(scaling);
    EXPECT_LT(relative_error(layer->logits(x), (0.9 * std_term + 0.1 * rec_term) * scale), 1e-5)
        << rakv::nn::to_string(scaling);
  }
}

TEST(ReciprocalAttention, FreezeAndUnfreezeReciprocalGates) {
  torch::manual_seed(7);
  ReciprocalAttention layer = make_layer(true, false, GateScaling::kFused);
  layer->freeze_reciprocal_gates();
  EXPECT_TRUE(layer->reciprocal_gates_frozen());
  EXPECT_EQ(layer->w_rec.abs().max().item<double>(), 0.0);
  layer->forward(torch::randn({1, 5, 48})).sum().backward();
  EXPECT_FALSE(layer->w_rec.grad().defined());
  EXPECT_TRUE(layer->w_std.grad().defined());
  layer->unfreeze_reciprocal_gates();
  EXPECT_FALSE(layer->reciprocal_gates_frozen());
  EXPECT_TRUE(torch::allclose(layer->w_rec, torch::full_like(layer->w_rec, 0.1)));
  layer->forward(torch::randn({1, 5, 48})).sum().backward();
  ASSERT_TRUE(layer->w_rec.grad().defined());
  EXPECT_GT(layer->w_rec.grad().abs().sum().item<double>(), 0.0);
}

TEST(ReciprocalAttention, BadInputGivesClearErrors) {
  ReciprocalAttentionOptions options;
  options.n_embd = 32;
  options.n_head = 4;
  options.reciprocal_rank = 8;  // head dim 8
  expect_error_containing([&] { ReciprocalAttention{options}; }, "0 < R < head dim, got R = 8 with head dim 8");
  options.reciprocal_rank = 0;
  expect_error_containing([&] { ReciprocalAttention{options}; }, "0 < R < head dim");
  options.reciprocal_rank = 2;
  options.n_head = 5;
  expect_error_containing([&] { ReciprocalAttention{options}; }, "must be divisible by n_head");
  options.n_head = 4;
  ReciprocalAttention layer(options);
  expect_error_containing([&] { layer->forward(torch::randn({2, 3, 31})); }, "RA expects x [B, T, 32]");
  expect_error_containing(
      [&] {
        rakv::ops::fold_reciprocal_gates(torch::randn({96, 32}), torch::ones({3}), torch::ones({3}), 4, 2);
      },
      "per-head gates have 3 entries but the layer has 4 heads");
  expect_error_containing(
      [&] { rakv::ops::fold_reciprocal_gates(torch::randn({90, 32}), torch::ones({1}), torch::ones({1}), 4, 2); },
      "[3C, C]");
}

}  // namespace
