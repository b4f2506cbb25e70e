// kv_importance (the streaming attention-mass importance of SPEC §3) against a float64
// reference built from the full masked softmax, over odd sizes, windows and both
// normalisations; its O(T) memory at T = 32768; bad input.
#include <sys/resource.h>

#include "rakv/ops.h"
#include "test_helpers.h"

namespace {

using rakv::testing::expect_error_containing;
using rakv::testing::relative_error;

// importance[b, h, j] from the materialised causal softmax in float64: the column sums of
// P over the counted (last `counted`) queries, divided per SPEC §3.
torch::Tensor reference_importance(const torch::Tensor& q, const torch::Tensor& k,
                                   bool exposure_correction, int64_t window, double scale) {
  const torch::Tensor q64 = q.to(torch::kFloat64), k64 = k.to(torch::kFloat64);
  const int64_t t = q.size(2);
  if (scale <= 0)
    scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  const torch::Tensor future = torch::ones({t, t}, torch::kBool).triu(1);
  const torch::Tensor probs = torch::softmax(
      (torch::matmul(q64, k64.transpose(-2, -1)) * scale).masked_fill(future, -INFINITY), -1);
  const int64_t counted = window == 0 ? t : std::min(window, t);
  const torch::Tensor mass = probs.narrow(2, t - counted, counted).sum(2);
  if (!exposure_correction)
    return mass / static_cast<double>(counted);
  const torch::Tensor j = torch::arange(t, torch::kFloat64);
  return mass / torch::clamp_max(static_cast<double>(t) - j, static_cast<double>(counted));
}

// Random q, k [2, 3, T, D] (never zeros: a zero row would give uniform attention and hide
// mistakes in the scores).
std::pair<torch::Tensor, torch::Tensor> random_qk(int64_t t, int64_t d, torch::Dtype dtype) {
  const auto options = torch::TensorOptions().dtype(dtype);
  return {torch::randn({2, 3, t, d}, options) * 1.5, torch::randn({2, 3, t, d}, options) * 1.5};
}

class KvImportanceSizes
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool, torch::Dtype>> {};

TEST_P(KvImportanceSizes, MatchesMaterialisedFloat64Reference) {
  const auto [t, d, exposure_correction, dtype] = GetParam();
  torch::manual_seed(t * 100 + d);
  const auto [q, k] = random_qk(t, d, dtype);
  // Tolerances: float64 to rounding; float32 kernel (float32 scores, float32 exp sums, float64
  // column accumulation) against the float64 reference.
  const double tolerance = dtype == torch::kFloat64 ? 1e-12 : 2e-5;
  for (int64_t window : {int64_t{0}, std::max<int64_t>(1, t / 3), t + 7}) {
    const torch::Tensor got = rakv::ops::kv_importance(q, k, exposure_correction, window, 0.0);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 3, t}));
    ASSERT_EQ(got.scalar_type(), dtype);
    const torch::Tensor want = reference_importance(q, k, exposure_correction, window, 0.0);
    EXPECT_LT(relative_error(got, want), tolerance)
        << "T=" << t << " D=" << d << " window=" << window;
  }
}

INSTANTIATE_TEST_SUITE_P(OddSizes, KvImportanceSizes,
                         ::testing::Combine(::testing::Values(1, 5, 33, 130),
                                            ::testing::Values(8, 64), ::testing::Bool(),
                                            ::testing::Values(torch::kFloat32, torch::kFloat64)));

TEST(KvImportance, ExplicitScaleAndStridedInputs) {
  torch::manual_seed(3);
  // q, k as split_heads makes them: [B, H, T, D] views of [B, T, H, D] (strided rows).
  const torch::Tensor q = torch::randn({2, 57, 4, 16}, torch::kFloat64).transpose(1, 2);
  const torch::Tensor k = torch::randn({2, 57, 4, 16}, torch::kFloat64).transpose(1, 2);
  const torch::Tensor got = rakv::ops::kv_importance(q, k, true, 20, 0.37);
  EXPECT_LT(relative_error(got, reference_importance(q, k, true, 20, 0.37)), 1e-12);
  // A non-contiguous last dim is copied.
  const torch::Tensor q_t = q.contiguous().transpose(2, 3).contiguous().transpose(2, 3);
  ASSERT_NE(q_t.stride(3), 1);
  EXPECT_LT(relative_error(rakv::ops::kv_importance(q_t, k, true, 20, 0.37), got), 1e-15);
}

TEST(KvImportance, WithoutCorrectionEachCountedQueryContributesMassOne) {
  torch::manual_seed(4);
  const auto [q, k] = random_qk(77, 8, torch::kFloat64);
  for (int64_t window : {0, 10}) {
    const torch::Tensor importance = rakv::ops::kv_importance(q, k, false, window, 0.0);
    EXPECT_LT((importance.sum(-1) - 1).abs().max().item<double>(), 1e-12);
  }
  // With exposure correction the last key is seen by the last query only.
  const torch::Tensor corrected = rakv::ops::kv_importance(q, k, true, 0, 0.0);
  const torch::Tensor probs_last =
      reference_importance(q, k, false, 1, 0.0).select(2, 76);  // P[T-1, T-1]
  EXPECT_LT(relative_error(corrected.select(2, 76), probs_last), 1e-12);
}

// Peak resident memory of the process in bytes (Linux reports kilobytes).
int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

TEST(KvImportance, LongSequenceRunsInLinearMemory) {
  // T x T float32 probabilities would be 4 GiB; the streaming kernel needs O(T) scratch. CTest
  // runs each test in its own process, so the peak before the call is the baseline.
  constexpr int64_t kT = 32768;
  torch::manual_seed(5);
  const torch::Tensor q = torch::randn({1, 1, kT, 8});
  const torch::Tensor k = torch::randn({1, 1, kT, 8});
  const int64_t before = peak_rss_bytes();
  const torch::Tensor importance = rakv::ops::kv_importance(q, k, false, 0, 0.0);
  const int64_t grown = peak_rss_bytes() - before;
  EXPECT_LT(grown, int64_t{256} << 20) << "peak RSS grew by " << (grown >> 20) << " MiB";
  EXPECT_NEAR(importance.sum().item<double>(), 1.0, 1e-4);
  EXPECT_GE(importance.min().item<float>(), 0.0f);
}

TEST(KvImportance, BadInputGivesClearErrors) {
  const torch::Tensor q = torch::randn({1, 2, 5, 4});
  const torch::Tensor k = torch::randn({1, 2, 5, 4});
  expect_error_containing([&] { rakv::ops::kv_importance(q[0], k[0], false, 0, 0); },
                          "shape [B, H, T, D]");
  expect_error_containing(
      [&] {
        rakv::ops::kv_importance(q, torch::randn({1, 2, 6, 4}), false, 0, 0);
      },
      "shapes differ");
  expect_error_containing([&] { rakv::ops::kv_importance(q, k.to(torch::kFloat64), false, 0, 0); },
                          "dtypes differ");
  expect_error_containing(
      [&] { rakv::ops::kv_importance(q.to(torch::kHalf), k.to(torch::kHalf), false, 0, 0); },
      "float32 and float64");
  expect_error_containing([&] { rakv::ops::kv_importance(q, k, false, -1, 0); },
                          "window must be >= 0");
  torch::Tensor poisoned = k.clone();
  poisoned[0][1][2][3] = NAN;
  expect_error_containing([&] { rakv::ops::kv_importance(q, poisoned, false, 0, 0); },
                          "k contains NaN at [0, 1, 2, 3]");
}

TEST(KvImportance, RegisteredWithTheDispatcher) {
  torch::manual_seed(6);
  const auto [q, k] = random_qk(9, 8, torch::kFloat32);
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("rakv::kv_importance", "")
                      .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, bool,
                                           int64_t, double)>();
  EXPECT_TRUE(
      torch::equal(op.call(q, k, true, 4, 0.0), rakv::ops::kv_importance(q, k, true, 4, 0.0)));
}

}  // namespace
