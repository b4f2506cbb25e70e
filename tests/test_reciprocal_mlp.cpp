// Reciprocal MLP: literal vs fused (outputs and every gradient) for every option combination,
// both against a float64 reference of SPEC §2, the tied mode for R_ff != n_embd, and bad input.
#include "rakv/nn/reciprocal_mlp.h"
#include "rakv/ops.h"

#include "test_helpers.h"

namespace {

using rakv::nn::ReciprocalMLP;
using rakv::nn::ReciprocalMLPOptions;
using rakv::nn::RMLPImpl;
using rakv::testing::expect_error_containing;
using rakv::testing::relative_error;

// SPEC §2 in float64: h_std = GELU(x up_std^T), h_low = GELU(x up_low^T) [mixer] [alpha],
// y = [w_std h_std | w_rec coupling h_low] down^T.
torch::Tensor reference_rmlp(const torch::Tensor& x, ReciprocalMLP& mlp) {
  const auto& o = mlp->options();
  const auto f64 = [](const torch::Tensor& v) { return v.detach().to(torch::kFloat64); };
  const int64_t hidden = o.expansion * o.n_embd, r = o.reciprocal_units, hidden_std = hidden - r;
  const torch::Tensor up = f64(mlp->c_fc->weight);
  const torch::Tensor up_std = up.narrow(0, 0, hidden_std);
  const torch::Tensor up_low = o.tied ? up.narrow(0, 0, r) : up.narrow(0, hidden_std, r);
  const torch::Tensor h_std = torch::gelu(torch::matmul(f64(x), up_std.t()));
  torch::Tensor h_low = torch::gelu(torch::matmul(f64(x), up_low.t()));
  if (o.mixer) h_low = torch::matmul(h_low, f64(mlp->mixer).t());
  if (o.gate_alpha) h_low = h_low * f64(mlp->gate_alpha);
  const torch::Tensor h = torch::cat(
      {h_std * f64(mlp->w_std), h_low * f64(mlp->w_rec) * f64(mlp->coupling_scale)}, -1);
  return torch::matmul(h, f64(mlp->c_proj->weight).t());
}

ReciprocalMLP make_mlp(bool mixer, bool gate_alpha, bool tied, int64_t c = 24, int64_t r = 10) {
  ReciprocalMLPOptions options;
  options.n_embd = c;
  options.reciprocal_units = r;
  options.mixer = mixer;
  options.gate_alpha = gate_alpha;
  options.tied = tied;
  ReciprocalMLP mlp(options);
  torch::NoGradGuard no_grad;
  mlp->w_std.uniform_(0.5, 1.5);
  mlp->w_rec.uniform_(0.2, 0.8);
  if (gate_alpha) mlp->gate_alpha.uniform_(0.3, 0.9);
  if (mixer) mlp->mixer.add_(torch::randn_like(mlp->mixer) * 0.3);
  mlp->set_coupling_scale(0.7);
  return mlp;
}

class RMLPVariants : public ::testing::TestWithParam<std::tuple<bool, bool, bool>> {};

TEST_P(RMLPVariants, LiteralAndFusedMatchTheReferenceAndEachOther) {
  const auto [mixer, gate_alpha, tied] = GetParam();
  torch::manual_seed(11);
  ReciprocalMLP mlp = make_mlp(mixer, gate_alpha, tied);
  const torch::Tensor x = torch::randn({3, 5, 24});
  const torch::Tensor upstream = torch::randn({3, 5, 24});
  const torch::Tensor reference = reference_rmlp(x, mlp);
  std::map<std::string, torch::Tensor> literal_grads;
  torch::Tensor literal_out;
  for (RMLPImpl impl : {RMLPImpl::kLiteral, RMLPImpl::kFused}) {
    SCOPED_TRACE(rakv::nn::to_string(impl));
    mlp->set_impl(impl);
    mlp->zero_grad();
    const torch::Tensor y = mlp->forward(x);
    EXPECT_LT(relative_error(y, reference), 2e-6);
    (y * upstream).sum().backward();
    if (impl == RMLPImpl::kLiteral) {
      literal_out = y.detach();
      for (const auto& p : mlp->named_parameters()) literal_grads[p.key()] = p.value().grad().clone();
      continue;
    }
    EXPECT_LT(relative_error(y, literal_out), 1e-6);
    for (const auto& p : mlp->named_parameters()) {
      SCOPED_TRACE(p.key());
      ASSERT_TRUE(p.value().grad().defined());
      EXPECT_LT(relative_error(p.value().grad(), literal_grads[p.key()]), 2e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllOptions, RMLPVariants,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           const std::string name = std::string(std::get<0>(info.param) ? "Mixer" : "") +
                                                    (std::get<1>(info.param) ? "GateAlpha" : "") +
                                                    (std::get<2>(info.param) ? "Tied" : "");
                           return name.empty() ? std::string("Plain") : name;
                         });

TEST(ReciprocalMLP, GateGradientsMatchFiniteDifferencesInFloat64) {
  torch::manual_seed(12);
  ReciprocalMLP mlp = make_mlp(true, true, false, 8, 4);
  mlp->to(torch::kFloat64);
  const torch::Tensor x = torch::randn({2, 3, 8}, torch::kFloat64);
  const torch::Tensor weights = torch::randn({2, 3, 8}, torch::kFloat64);
  for (RMLPImpl impl : {RMLPImpl::kLiteral, RMLPImpl::kFused}) {
    mlp->set_impl(impl);
    const auto loss = [&] { return (mlp->forward(x) * weights).sum(); };
    const std::vector<torch::Tensor> gates = {mlp->w_std, mlp->w_rec, mlp->gate_alpha, mlp->mixer};
    const auto grads = torch::autograd::grad({loss()}, gates);
    for (size_t i = 0; i < gates.size(); ++i) {
      const auto fd = rakv::testing::finite_difference([&] { return loss().item<double>(); }, gates[i]);
      EXPECT_LT(relative_error(grads[i], fd), 1e-6) << rakv::nn::to_string(impl) << " gate " << i;
    }
  }
}

// The reference's tied mode only ran when R_ff == n_embd; rakv's reuses up_std's first R_ff rows.
TEST(ReciprocalMLP, TiedModeWorksForRffDifferentFromNEmbd) {
  torch::manual_seed(13);
  ReciprocalMLP mlp = make_mlp(false, false, true, 32, 16);
  EXPECT_EQ(mlp->c_fc->weight.size(0), 4 * 32 - 16);
  const torch::Tensor x = torch::randn({2, 4, 32});
  EXPECT_LT(relative_error(mlp->forward(x), reference_rmlp(x, mlp)), 2e-6);
}

TEST(ReciprocalMLP, CouplingScaleIsClamped) {
  ReciprocalMLP mlp = make_mlp(false, false, false);
  mlp->set_coupling_scale(3.0);
  EXPECT_EQ(mlp->coupling_scale_value(), 1.0);
  mlp->set_coupling_scale(-1.0);
  EXPECT_EQ(mlp->coupling_scale_value(), 0.0);
}

TEST(ReciprocalMLP, BadInputGivesClearErrors) {
  ReciprocalMLPOptions options;
  options.n_embd = 8;
  options.reciprocal_units = 32;
  expect_error_containing([&] { ReciprocalMLP{options}; }, "0 < R_ff < hidden width, got R_ff = 32");
  options.reciprocal_units = 20;
  options.tied = true;
  expect_error_containing([&] { ReciprocalMLP{options}; }, "must be <= D_ff - R_ff");
  options.reciprocal_units = 4;
  ReciprocalMLP mlp(options);
  expect_error_containing([&] { mlp->forward(torch::randn({2, 9})); }, "R-MLP expects x [..., 8]");
}

// The op behind the fused R-MLP: columns before `split` times w_std, the rest times rec_scale,
// with gradients for all three (autograd of the formula).
TEST(ReciprocalMLP, MlpGateFoldOpMatchesItsFormula) {
  torch::manual_seed(97);
  const torch::Tensor w = torch::randn({6, 20}, torch::kFloat64).requires_grad_(true);
  const torch::Tensor a = torch::full({1}, 0.8, torch::kFloat64).requires_grad_(true);
  const torch::Tensor b = torch::full({1}, 0.2, torch::kFloat64).requires_grad_(true);
  const torch::Tensor dy = torch::randn({6, 20}, torch::kFloat64);
  rakv::ops::fold_reciprocal_mlp_gates(w, a, b, 16).backward(dy);
  const torch::Tensor scale = torch::cat({torch::full({16}, 0.8, torch::kFloat64), torch::full({4}, 0.2, torch::kFloat64)});
  EXPECT_LT(relative_error(w.grad(), dy * scale), 1e-14);
  EXPECT_NEAR(a.grad().item<double>(), (dy * w).narrow(1, 0, 16).sum().item<double>(), 1e-12);
  EXPECT_NEAR(b.grad().item<double>(), (dy * w).narrow(1, 16, 4).sum().item<double>(), 1e-12);
  expect_error_containing([&] { rakv::ops::fold_reciprocal_mlp_gates(w, a, b, 21); }, "split 21 outside [0, 20]");
  expect_error_containing([&] { rakv::ops::fold_reciprocal_mlp_gates(w, torch::ones({2}), b, 4); },
                          "one floating value each");
}

}  // namespace
