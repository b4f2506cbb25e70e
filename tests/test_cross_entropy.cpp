// The fused cross-entropy op on the CPU: loss, per-row lse and gradient against a float64
// LibTorch reference (log_softmax and autograd) on random logits, with padding columns, ignored
// rows and half-precision inputs; bad inputs.
#include <torch/torch.h>

#include <cmath>

#include "rakv/ops.h"
#include "test_helpers.h"

namespace {

using rakv::testing::expect_error_containing;
using rakv::testing::relative_error;

constexpr int64_t kIgnore = -100;

// Targets in [0, vocab) with every 5th row ignored.
torch::Tensor random_targets(torch::IntArrayRef shape, int64_t vocab) {
  torch::Tensor t = torch::randint(0, vocab, shape, torch::kInt64);
  t.view({-1}).slice(0, 2, torch::indexing::None, 5).fill_(kIgnore);
  return t;
}

// The mean cross-entropy of logits[..., :vocab] in float64 by LibTorch's own formula.
torch::Tensor reference_loss(const torch::Tensor& logits64, const torch::Tensor& targets,
                             int64_t vocab) {
  const torch::Tensor rows = logits64.narrow(-1, 0, vocab).reshape({-1, vocab});
  return torch::nll_loss(torch::log_softmax(rows, -1), targets.reshape({-1}), {},
                         at::Reduction::Mean, kIgnore);
}

struct Case {
  std::vector<int64_t> shape;  // leading shape of the logits
  int64_t columns, vocab;
  double amp;
  torch::ScalarType dtype;
};

TEST(CrossEntropy, LossAndGradientMatchAFloat64Reference) {
  torch::manual_seed(31);
  const Case cases[] = {
      {{1}, 1, 1, 1.0, torch::kFloat32},          {{7}, 5, 5, 2.0, torch::kFloat64},
      {{2, 9}, 64, 50, 4.0, torch::kFloat32},     {{3, 11}, 257, 257, 8.0, torch::kFloat64},
      {{4, 16}, 320, 300, 3.0, torch::kBFloat16}, {{33}, 1000, 999, 2.0, torch::kHalf},
      {{2, 5}, 2048, 2000, 1.0, torch::kFloat32},
  };
  for (const Case& c : cases) {
    std::vector<int64_t> full = c.shape;
    full.push_back(c.columns);
    const torch::Tensor logits = (torch::randn(full, torch::kFloat64) * c.amp).to(c.dtype);
    const torch::Tensor targets = random_targets(c.shape, c.vocab);
    const torch::Tensor x = logits.clone().requires_grad_(true);
    const torch::Tensor loss = rakv::ops::cross_entropy_loss(x, targets, c.vocab, kIgnore);
    loss.backward();

    const torch::Tensor x64 = logits.to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor expected = reference_loss(x64, targets, c.vocab);
    expected.backward();
    const double loss_tol = c.dtype == torch::kFloat64 ? 1e-12 : 1e-6;
    const double grad_tol = c.dtype == torch::kFloat64   ? 1e-12
                            : c.dtype == torch::kFloat32 ? 1e-6
                            : c.dtype == torch::kHalf    ? 2e-3
                                                         : 1e-2;
    SCOPED_TRACE(::testing::Message()
                 << c.dtype << " columns " << c.columns << " vocab " << c.vocab);
    EXPECT_EQ(loss.dim(), 0);
    EXPECT_EQ(loss.scalar_type(), c.dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
    EXPECT_NEAR(loss.item<double>(), expected.item<double>(),
                loss_tol * std::max(1.0, std::fabs(expected.item<double>())));
    ASSERT_EQ(x.grad().scalar_type(), c.dtype);
    ASSERT_EQ(x.grad().sizes(), logits.sizes());
    EXPECT_LT(relative_error(x.grad(), x64.grad()), grad_tol);
    if (c.vocab < c.columns) {
      EXPECT_TRUE(x.grad().narrow(-1, c.vocab, c.columns - c.vocab).eq(0).all().item<bool>())
          << "padding columns must get a zero gradient";
    }
  }
}

TEST(CrossEntropy, RowsMatchTheirDefinitionAndIgnoredRowsAreZero) {
  torch::manual_seed(32);
  const torch::Tensor logits = torch::randn({12, 40}, torch::kFloat64) * 3;
  const torch::Tensor targets = random_targets({12}, 37);
  const auto [loss, lse] = rakv::ops::cross_entropy_forward(logits, targets, 37, kIgnore);
  const torch::Tensor expected_lse = torch::logsumexp(logits.narrow(1, 0, 37), 1);
  EXPECT_LT(relative_error(lse, expected_lse), 1e-14);
  for (int64_t i = 0; i < 12; ++i) {
    const int64_t t = targets[i].item<int64_t>();
    const double expected = t == kIgnore ? 0.0 : (expected_lse[i] - logits[i][t]).item<double>();
    EXPECT_NEAR(loss[i].item<double>(), expected, 1e-12) << "row " << i;
  }
  const torch::Tensor scale = torch::tensor(0.25, torch::kFloat64);
  const torch::Tensor grad =
      rakv::ops::cross_entropy_backward(scale, logits, targets, lse, 37, kIgnore);
  EXPECT_TRUE(grad[2].eq(0).all().item<bool>()) << "ignored row 2 must have a zero gradient";
  const torch::Tensor softmax = torch::softmax(logits.narrow(1, 0, 37), 1);
  const int64_t t0 = targets[0].item<int64_t>();
  torch::Tensor expected_row = softmax[0].clone();
  expected_row[t0] -= 1.0;
  EXPECT_LT(relative_error(grad[0].narrow(0, 0, 37), 0.25 * expected_row), 1e-13);
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  torch::manual_seed(33);
  torch::Tensor logits = torch::randn({3, 4, 9}, torch::kFloat64);
  const torch::Tensor targets = random_targets({3, 4}, 7);
  const torch::Tensor x = logits.clone().requires_grad_(true);
  rakv::ops::cross_entropy_loss(x, targets, 7, kIgnore).backward();
  const torch::Tensor numeric = rakv::testing::finite_difference(
      [&] { return rakv::ops::cross_entropy_loss(logits, targets, 7, kIgnore).item<double>(); },
      logits);
  EXPECT_LT(relative_error(x.grad(), numeric), 1e-7);
}

TEST(CrossEntropy, EveryRowIgnoredGivesNaNLikePyTorch) {
  const torch::Tensor logits = torch::randn({4, 6});
  const torch::Tensor targets = torch::full({4}, kIgnore, torch::kInt64);
  EXPECT_TRUE(std::isnan(rakv::ops::cross_entropy_loss(logits, targets).item<double>()));
  EXPECT_TRUE(std::isnan(torch::nn::functional::cross_entropy(logits, targets).item<double>()));
}

TEST(CrossEntropy, RegisteredWithTheDispatcher) {
  torch::manual_seed(34);
  const torch::Tensor logits = torch::randn({5, 12});
  const torch::Tensor targets = torch::randint(0, 10, {5}, torch::kInt64);
  const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rakv::cross_entropy_loss", "")
          .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, int64_t, int64_t)>();
  EXPECT_TRUE(torch::equal(op.call(logits, targets, 10, kIgnore),
                           rakv::ops::cross_entropy_loss(logits, targets, 10, kIgnore)));
}

TEST(CrossEntropy, BadInputsAreRejectedWithAClearMessage) {
  const torch::Tensor logits = torch::randn({4, 10});
  const torch::Tensor targets = torch::randint(0, 10, {4}, torch::kInt64);
  torch::Tensor out_of_range = targets.clone();
  out_of_range[2] = 10;
  expect_error_containing([&] { rakv::ops::cross_entropy_loss(logits, out_of_range); },
                          "target 10 at row 2 is outside [0, 10)");
  torch::Tensor negative = targets.clone();
  negative[1] = -1;
  expect_error_containing([&] { rakv::ops::cross_entropy_loss(logits, negative); },
                          "target -1 at row 1");
  expect_error_containing([&] { rakv::ops::cross_entropy_loss(logits, targets, 11); },
                          "vocab_size 11 exceeds the logits' 10 columns");
  expect_error_containing([&] { rakv::ops::cross_entropy_loss(logits, targets.to(torch::kInt32)); },
                          "targets must be int64");
  expect_error_containing([&] { rakv::ops::cross_entropy_loss(logits, targets.narrow(0, 0, 3)); },
                          "must have the logits' leading shape");
  expect_error_containing([&] { rakv::ops::cross_entropy_loss(logits.to(torch::kInt64), targets); },
                          "logits must be float32, float64, float16 or bfloat16");
  expect_error_containing(
      [&] {
        rakv::ops::cross_entropy_loss(torch::randn({4, 0}), targets);
      },
      "at least one column");
  const auto [loss, lse] = rakv::ops::cross_entropy_forward(logits, targets, 10, kIgnore);
  expect_error_containing(
      [&] {
        rakv::ops::cross_entropy_backward(torch::tensor(1.0f), logits, targets, lse.narrow(0, 0, 2),
                                          10, kIgnore);
      },
      "lse must be the forward's");
}

}  // namespace
