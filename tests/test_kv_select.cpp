// kv_select (SPEC §3): `exact` against a full stable sort on many rows (ties, signed zeros,
// recency forcing, rows split over threads), `sampling`'s count, recency and recall against
// `exact`, `audit_sampling` reproducing the audit's count, kv_keep_count, edge cases, errors.
#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <set>
#include <string>

#include "rakv/apps/topk_bench.h"
#include "rakv/ops.h"
#include "test_helpers.h"

namespace {

using rakv::ops::TopkMethod;
using rakv::testing::expect_error_containing;

constexpr int64_t kKMin = 64;
constexpr double kKeepRatio = 0.38;

// SPEC §3's selection written directly: the last min(recency, k) positions when T > recency,
// then the most important earlier ones by a stable sort (ties to the lower index), ascending.
std::vector<int64_t> reference_select(const torch::Tensor& row, int64_t k_keep, int64_t recency) {
  const torch::Tensor values = row.to(torch::kFloat64).contiguous();
  const double* x = values.data_ptr<double>();
  const int64_t t = row.numel();
  const int64_t forced = recency > 0 && t > recency ? std::min(recency, k_keep) : 0;
  std::vector<int64_t> order(t - forced);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  order.resize(k_keep - forced);
  for (int64_t j = t - forced; j < t; ++j)
    order.push_back(j);
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int64_t> row_of(const torch::Tensor& indices, int64_t b, int64_t h) {
  const torch::Tensor row = indices[b][h].contiguous();
  return {row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()};
}

bool strictly_ascending(const std::vector<int64_t>& v) {
  return std::adjacent_find(v.begin(), v.end(), std::greater_equal<int64_t>()) == v.end();
}

enum class Values { kUniform, kFewLevels, kSignedWithZeros };

// Importance [B, H, T] never all zeros: uniform in (0.001, 1], a handful of levels (heavy
// ties), or signed values with both zeros and repeated extremes.
torch::Tensor random_importance(int64_t b, int64_t h, int64_t t, Values kind, torch::Dtype dtype) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor x;
  switch (kind) {
    case Values::kUniform:
      x = torch::rand({b, h, t}, options) * 0.999 + 0.001;
      break;
    case Values::kFewLevels:
      x = (torch::randint(1, 5, {b, h, t}, options)) / 4.0;
      break;
    case Values::kSignedWithZeros: {
      x = torch::randn({b, h, t}, options);
      x.masked_fill_(torch::rand({b, h, t}) < 0.2, 0.0);
      x.masked_fill_(torch::rand({b, h, t}) < 0.1, -0.0);
      x.masked_fill_(torch::rand({b, h, t}) < 0.05, -std::numeric_limits<double>::infinity());
      x.masked_fill_(torch::rand({b, h, t}) < 0.05, std::numeric_limits<double>::infinity());
      break;
    }
  }
  return x.to(dtype);
}

void expect_exact(const torch::Tensor& importance, int64_t k_keep, int64_t recency,
                  const std::string& label) {
  const torch::Tensor got =
      rakv::ops::kv_select(importance, k_keep, recency, TopkMethod::kExact, 0.02, 0);
  ASSERT_EQ(got.scalar_type(), torch::kInt64);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{importance.size(0), importance.size(1), k_keep}));
  for (int64_t b = 0; b < importance.size(0); ++b) {
    for (int64_t h = 0; h < importance.size(1); ++h) {
      const std::vector<int64_t> row = row_of(got, b, h);
      ASSERT_EQ(row, reference_select(importance[b][h], k_keep, recency))
          << label << " row [" << b << ", " << h << "] k=" << k_keep << " recency=" << recency;
    }
  }
}

TEST(KvSelectExact, EqualsFullSortOnRandomRows) {
  torch::manual_seed(11);
  for (const torch::Dtype dtype : {torch::kFloat32, torch::kFloat64}) {
    for (const Values kind : {Values::kUniform, Values::kFewLevels, Values::kSignedWithZeros}) {
      for (const int64_t t : {1, 2, 7, 64, 100, 777, 4099}) {
        const torch::Tensor importance = random_importance(3, 5, t, kind, dtype);
        const int64_t budget = rakv::ops::kv_keep_count(t, kKeepRatio, kKMin);
        for (const int64_t k : {int64_t{1}, std::min(kKMin, t), t, budget}) {
          for (const int64_t recency : {0, 3, 64}) {
            expect_exact(importance, k, recency,
                         std::string(dtype == torch::kFloat32 ? "float32" : "float64") + " kind " +
                             std::to_string(static_cast<int>(kind)) + " T=" + std::to_string(t));
          }
        }
      }
    }
  }
}

// Sets OMP_NUM_THREADS for the scope (the kernels' thread policy), restoring it after.
class ScopedThreads {
 public:
  explicit ScopedThreads(const char* value) {
    if (const char* old = std::getenv("OMP_NUM_THREADS"))
      old_ = old;
    setenv("OMP_NUM_THREADS", value, 1);
  }
  ~ScopedThreads() {
    if (old_) {
      setenv("OMP_NUM_THREADS", old_->c_str(), 1);
    } else {
      unsetenv("OMP_NUM_THREADS");
    }
  }

 private:
  std::optional<std::string> old_;
};

TEST(KvSelectExact, LongRowsSplitOverThreadsGiveTheSameResult) {
  // Fewer rows than threads: each row is cut into chunks with merged histograms and per-chunk
  // output offsets, ties shared out in position order across chunks.
  const ScopedThreads threads("4");
  ASSERT_EQ(rakv::ops::kv_kernel_threads(), 4);
  torch::manual_seed(12);
  for (const Values kind : {Values::kUniform, Values::kFewLevels}) {
    const torch::Tensor importance = random_importance(1, 2, 100003, kind, torch::kFloat32);
    for (const int64_t k : {int64_t{1}, int64_t{38001}, int64_t{100003}}) {
      expect_exact(importance, k, 64, "split rows kind " + std::to_string(static_cast<int>(kind)));
    }
  }
}

TEST(KvSelectExact, AllEqualImportanceKeepsTheEarliestAfterTheRecencyWindow) {
  const torch::Tensor importance = torch::full({2, 2, 200}, 0.25);
  const torch::Tensor got = rakv::ops::kv_select(importance, 100, 64, TopkMethod::kExact, 0.02, 0);
  std::vector<int64_t> want(36);
  std::iota(want.begin(), want.end(), int64_t{0});
  for (int64_t j = 136; j < 200; ++j)
    want.push_back(j);
  EXPECT_EQ(row_of(got, 1, 1), want);
}

TEST(KvSelectExact, EdgeCases) {
  // T = 1.
  EXPECT_EQ(rakv::ops::kv_keep_count(1, kKeepRatio, kKMin), 1);
  const torch::Tensor single =
      rakv::ops::kv_select(torch::full({1, 1, 1}, 0.5), 1, 64, TopkMethod::kExact, 0.02, 0);
  EXPECT_EQ(row_of(single, 0, 0), std::vector<int64_t>{0});
  // T < k_min: everything is kept.
  EXPECT_EQ(rakv::ops::kv_keep_count(40, kKeepRatio, kKMin), 40);
  const torch::Tensor short_rows = torch::rand({1, 2, 40}) + 0.1;
  std::vector<int64_t> all(40);
  std::iota(all.begin(), all.end(), int64_t{0});
  EXPECT_EQ(row_of(rakv::ops::kv_select(short_rows, 40, 64, TopkMethod::kExact, 0.02, 0), 0, 1),
            all);
  // T <= recency: no forced window, the plain top k.
  const torch::Tensor values = torch::tensor({0.1, 0.9, 0.3, 0.8, 0.2}).view({1, 1, 5});
  EXPECT_EQ(row_of(rakv::ops::kv_select(values, 2, 5, TopkMethod::kExact, 0.02, 0), 0, 0),
            (std::vector<int64_t>{1, 3}));
  // recency > k_keep: the last k_keep positions.
  EXPECT_EQ(row_of(rakv::ops::kv_select(values, 2, 3, TopkMethod::kExact, 0.02, 0), 0, 0),
            (std::vector<int64_t>{3, 4}));
  // A strided (non-contiguous) importance gives the same selection.
  const torch::Tensor wide = torch::rand({3, 300, 2}) + 0.1;
  const torch::Tensor strided = wide.permute({0, 2, 1});
  EXPECT_TRUE(torch::equal(
      rakv::ops::kv_select(strided, 120, 16, TopkMethod::kExact, 0.02, 0),
      rakv::ops::kv_select(strided.contiguous(), 120, 16, TopkMethod::kExact, 0.02, 0)));
}

TEST(KvKeepCount, FollowsTheSpecFormula) {
  EXPECT_EQ(rakv::ops::kv_keep_count(16384, kKeepRatio, kKMin), 6225);
  EXPECT_EQ(rakv::ops::kv_keep_count(1024, 1 / (1 + 1.6180339887498949), kKMin), 391);
  EXPECT_EQ(rakv::ops::kv_keep_count(100, kKeepRatio, kKMin), 64);
  EXPECT_EQ(rakv::ops::kv_keep_count(1000, 1.0, kKMin), 1000);
  expect_error_containing([] { rakv::ops::kv_keep_count(0, 0.5, 64); }, "T must be >= 1");
  expect_error_containing([] { rakv::ops::kv_keep_count(10, 0.0, 64); }, "keep_ratio");
  expect_error_containing([] { rakv::ops::kv_keep_count(10, 1.5, 64); }, "keep_ratio");
  expect_error_containing([] { rakv::ops::kv_keep_count(10, 0.5, 0); }, "k_min");
}

// Mean over rows of |sampled ∩ exact| / k.
double mean_recall(const torch::Tensor& sampled, const torch::Tensor& exact) {
  double recall = 0;
  const int64_t rows = exact.size(0) * exact.size(1);
  for (int64_t b = 0; b < exact.size(0); ++b) {
    for (int64_t h = 0; h < exact.size(1); ++h) {
      const std::vector<int64_t> want = row_of(exact, b, h);
      const std::vector<int64_t> got = row_of(sampled, b, h);
      const std::set<int64_t> got_set(got.begin(), got.end());
      int64_t hits = 0;
      for (int64_t j : want)
        hits += got_set.count(j);
      recall += static_cast<double>(hits) / static_cast<double>(want.size());
    }
  }
  return recall / static_cast<double>(rows);
}

void expect_exact_count_with_recency(const torch::Tensor& selected, int64_t t, int64_t k_keep,
                                     int64_t recency) {
  ASSERT_EQ(selected.size(2), k_keep);
  const int64_t forced = t > recency ? std::min(recency, k_keep) : 0;
  for (int64_t b = 0; b < selected.size(0); ++b) {
    for (int64_t h = 0; h < selected.size(1); ++h) {
      const std::vector<int64_t> row = row_of(selected, b, h);
      ASSERT_TRUE(strictly_ascending(row)) << "T=" << t << " k=" << k_keep;
      ASSERT_GE(row.front(), 0);
      ASSERT_LT(row.back(), t);
      for (int64_t i = 0; i < forced; ++i)
        ASSERT_EQ(row[k_keep - forced + i], t - forced + i);
    }
  }
}

TEST(KvSelectSampling, ReturnsExactlyKKeepWithTheRecencyWindow) {
  torch::manual_seed(13);
  for (const int64_t t : {1, 5, 64, 65, 100, 1000, 5000}) {
    for (const Values kind : {Values::kUniform, Values::kFewLevels}) {
      const torch::Tensor importance = random_importance(2, 3, t, kind, torch::kFloat32);
      for (const int64_t k : {int64_t{1}, rakv::ops::kv_keep_count(t, kKeepRatio, kKMin), t}) {
        for (const int64_t recency : {0, 64}) {
          const torch::Tensor got =
              rakv::ops::kv_select(importance, k, recency, TopkMethod::kSampling, 0.02, 7);
          expect_exact_count_with_recency(got, t, k, recency);
        }
      }
    }
  }
}

TEST(KvSelectSampling, RecallAgainstExactOnLongRows) {
  torch::manual_seed(14);
  for (const int64_t t : {8192, 16384}) {
    const torch::Tensor importance = random_importance(2, 4, t, Values::kUniform, torch::kFloat32);
    const int64_t k = rakv::ops::kv_keep_count(t, kKeepRatio, kKMin);
    const torch::Tensor sampled =
        rakv::ops::kv_select(importance, k, 64, TopkMethod::kSampling, 0.02, 1);
    expect_exact_count_with_recency(sampled, t, k, 64);
    const torch::Tensor exact =
        rakv::ops::kv_select(importance, k, 64, TopkMethod::kExact, 0.02, 1);
    const double recall = mean_recall(sampled, exact);
    EXPECT_GE(recall, 0.9) << "T=" << t;
    EXPECT_LT(recall, 1.0) << "T=" << t << ": a 2% sample should not be exact";
  }
}

TEST(KvSelectSampling, SeedMakesItDeterministic) {
  torch::manual_seed(15);
  const torch::Tensor importance = random_importance(2, 3, 9000, Values::kUniform, torch::kFloat32);
  const auto select = [&](uint64_t seed) {
    return rakv::ops::kv_select(importance, 3420, 64, TopkMethod::kSampling, 0.02, seed);
  };
  EXPECT_TRUE(torch::equal(select(3), select(3)));
  EXPECT_FALSE(torch::equal(select(3), select(4)));
}

TEST(KvSelectAuditSampling, ReturnsTheAuditsShortCount) {
  // The audit's code keeps k_keep * sample / T positions: 124 of 6225 at T = 16384 (2%).
  torch::manual_seed(16);
  const int64_t t = 16384;
  const int64_t k = rakv::ops::kv_keep_count(t, kKeepRatio, kKMin);
  ASSERT_EQ(k, 6225);
  const torch::Tensor importance = random_importance(2, 3, t, Values::kUniform, torch::kFloat32);
  const torch::Tensor got =
      rakv::ops::kv_select(importance, k, 64, TopkMethod::kAuditSampling, 0.02, 5);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 3, 124}));
  for (int64_t h = 0; h < 3; ++h) {
    const std::vector<int64_t> row = row_of(got, 1, h);
    EXPECT_TRUE(std::is_sorted(row.begin(), row.end()));
    EXPECT_GE(row.front(), 0);
    EXPECT_LT(row.back(), t);
  }
  // At least one position: max(1, ...) even when the product rounds to zero.
  const torch::Tensor tiny = rakv::ops::kv_select(torch::rand({1, 1, 100}) + 0.1, 1, 0,
                                                  TopkMethod::kAuditSampling, 0.02, 0);
  EXPECT_EQ(tiny.size(2), 1);
}

TEST(KvSelect, NanIsReportedWithItsPosition) {
  torch::Tensor importance = torch::rand({2, 3, 300}) + 0.1;
  importance[1][2][37] = NAN;
  for (const TopkMethod method : {TopkMethod::kExact, TopkMethod::kSampling}) {
    expect_error_containing([&] { rakv::ops::kv_select(importance, 100, 64, method, 0.02, 0); },
                            "importance contains NaN at [1, 2, 37]");
  }
  // Inside the forced recency window too, and in float64 rows.
  torch::Tensor late = torch::rand({1, 1, 300}, torch::kFloat64) + 0.1;
  late[0][0][290] = NAN;
  expect_error_containing([&] { rakv::ops::kv_select(late, 100, 64, TopkMethod::kExact, 0.02, 0); },
                          "importance contains NaN at [0, 0, 290]");
}

TEST(KvSelect, BadArgumentsGiveClearErrors) {
  const torch::Tensor importance = torch::rand({1, 2, 50});
  expect_error_containing(
      [&] { rakv::ops::kv_select(importance, 51, 0, TopkMethod::kExact, 0.02, 0); },
      "k_keep must be in [1, T = 50]");
  expect_error_containing(
      [&] { rakv::ops::kv_select(importance, 0, 0, TopkMethod::kExact, 0.02, 0); },
      "k_keep must be in");
  expect_error_containing(
      [&] { rakv::ops::kv_select(importance[0], 5, 0, TopkMethod::kExact, 0.02, 0); },
      "shape [B, H, T]");
  expect_error_containing(
      [&] {
        rakv::ops::kv_select(importance.to(torch::kInt32), 5, 0, TopkMethod::kExact, 0.02, 0);
      },
      "floating importance");
  expect_error_containing(
      [&] { rakv::ops::kv_select(importance.to(torch::kHalf), 5, 0, TopkMethod::kExact, 0.02, 0); },
      "float32 and float64");
  expect_error_containing(
      [&] { rakv::ops::kv_select(importance, 5, -1, TopkMethod::kExact, 0.02, 0); },
      "recency must be >= 0");
  expect_error_containing(
      [&] { rakv::ops::kv_select(importance, 5, 0, TopkMethod::kSampling, 0.0, 0); },
      "sample_fraction");
  expect_error_containing([] { rakv::ops::parse_topk_method("fast"); },
                          "expected exact, sampling or audit_sampling");
  for (const TopkMethod method :
       {TopkMethod::kExact, TopkMethod::kSampling, TopkMethod::kAuditSampling}) {
    EXPECT_EQ(rakv::ops::parse_topk_method(rakv::ops::to_string(method)), method);
  }
}

TEST(KvSelect, RegisteredWithTheDispatcher) {
  const torch::Tensor importance = torch::rand({2, 2, 300}) + 0.1;
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("rakv::kv_select", "")
                      .typed<torch::Tensor(const torch::Tensor&, int64_t, int64_t, c10::string_view,
                                           double, int64_t)>();
  EXPECT_TRUE(torch::equal(op.call(importance, 120, 64, "exact", 0.02, 0),
                           rakv::ops::kv_select(importance, 120, 64, TopkMethod::kExact, 0.02, 0)));
}

// The recall `rakv topk` and the audit report: exactly 1 for an identical selection (the audit
// calls an exact selection correct only then), exactly the hit fraction otherwise.
TEST(KvSelect, SelectionRecallCountsHitsExactly) {
  torch::manual_seed(85);
  const torch::Tensor importance = torch::rand({8, 12, 1024}) + 0.1;
  const torch::Tensor exact =
      rakv::ops::kv_select(importance, 389, 64, TopkMethod::kExact, 0.02, 0);
  EXPECT_EQ(rakv::apps::selection_recall(exact, exact), 1.0);
  torch::Tensor one_off = exact.clone();
  // Row 0's first kept position replaced by a position it did not keep.
  std::vector<bool> kept(1024, false);
  for (int64_t j = 0; j < 389; ++j)
    kept[exact[0][0][j].item<int64_t>()] = true;
  const int64_t missing = std::find(kept.begin(), kept.end(), false) - kept.begin();
  one_off[0][0][0] = missing;
  EXPECT_EQ(rakv::apps::selection_recall(one_off, exact), (96.0 * 389.0 - 1.0) / (96.0 * 389.0));
}

TEST(TopkBenchmark, OneRowPerMethodOnTheCpu) {
  rakv::apps::TopkBenchOptions options;
  options.seq_len = 600;
  options.batch = 1;
  options.heads = 2;
  options.warmup = 0;
  options.repeats = 1;
  const auto rows = rakv::apps::run_topk_benchmark(options);
  // The CPU kernels check for NaN at no cost: no separate row for the check.
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].method, "exact");
  EXPECT_EQ(rows[0].recall, 1.0);
  EXPECT_EQ(rows[1].method, "sampling");
  EXPECT_EQ(rows[2].method, "audit_sampling");
  for (const auto& row : rows) EXPECT_GT(row.median_ms, 0.0) << row.method;
}

}  // namespace
