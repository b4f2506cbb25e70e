// The generation KV cache: budget 1.0 equals full recomputation, byte accounting, eviction keeps
// the recency window and the budget, KVSplice-compressed values, streaming evaluation, and errors
// for bad budgets and foreign KVSplice files.
#include "rakv/nn/kv_cache.h"

#include <fstream>
#include <sstream>

#include "rakv/apps/eval.h"
#include "rakv/apps/kv_compression.h"
#include "rakv/model/checkpoint.h"
#include "rakv/model/gpt2.h"
#include "test_helpers.h"

namespace {

using rakv::nn::KVCachePolicy;
using rakv::nn::LayerKVCache;
using rakv::testing::expect_error_containing;
using rakv::testing::relative_error;

rakv::config::Config small_config() {
  rakv::config::Config cfg;
  cfg.set("CONFIG_N_LAYER", "2");
  cfg.set("CONFIG_N_HEAD", "2");
  cfg.set("CONFIG_N_EMBD", "32");
  cfg.set("CONFIG_BLOCK_SIZE", "48");
  cfg.set("CONFIG_RMLP_R_FF", "16");
  cfg.set("CONFIG_KV_K_MIN", "4");
  cfg.set("CONFIG_KV_RECENCY", "3");
  cfg.set("CONFIG_KV_PRUNE_INTERVAL", "8");
  return cfg;
}

rakv::model::GPT2 small_model() {
  torch::manual_seed(61);
  rakv::model::GPT2 model(rakv::model::gpt2_config_from(small_config()));
  model->eval();
  return model;
}

std::vector<uint8_t> random_text(int64_t n) {
  torch::manual_seed(62);
  const torch::Tensor bytes = torch::randint(32, 127, {n}, torch::kInt64);
  std::vector<uint8_t> text(n);
  for (int64_t i = 0; i < n; ++i) text[i] = static_cast<uint8_t>(bytes[i].item<int64_t>());
  return text;
}

KVCachePolicy evicting(double keep) {
  KVCachePolicy policy;
  policy.keep_ratio = keep;
  policy.k_min = 4;
  policy.recency = 3;
  policy.interval = 8;
  return policy;
}

TEST(KVCache, BudgetOneEqualsFullRecomputation) {
  auto model = small_model();
  torch::NoGradGuard no_grad;
  const torch::Tensor idx = torch::randint(0, 256, {2, 30}, torch::kInt64);
  const torch::Tensor full = model->forward(idx);
  auto cache = model->new_cache(std::vector<KVCachePolicy>(2, evicting(1.0)));
  std::vector<torch::Tensor> steps;
  for (int64_t t = 0; t < 30; ++t) steps.push_back(model->forward_cached(idx.narrow(1, t, 1), cache));
  EXPECT_LT(relative_error(torch::cat(steps, 1), full), 1e-5);
}

TEST(KVCache, ByteAccountingIsTheSumOfTensorSizes) {
  torch::manual_seed(63);
  LayerKVCache plain;
  plain.append(torch::randn({2, 3, 5, 8}), torch::randn({2, 3, 5, 8}));
  EXPECT_EQ(plain.bytes(), 2 * (2 * 3 * 5 * 8) * 4);
  EXPECT_EQ(plain.full_bytes(), plain.bytes());
  EXPECT_GE(plain.allocated_bytes(), plain.bytes());

  LayerKVCache cache(evicting(0.5));
  for (int64_t t = 0; t < 20; ++t) {
    cache.append(torch::randn({2, 3, 1, 8}), torch::randn({2, 3, 1, 8}));
    cache.attend(torch::randn({2, 3, 1, 8}));
    const int64_t entries = 2 * 3 * cache.length();
    // keys + values (float32) + positions (int64) + attention mass (float32)
    EXPECT_EQ(cache.bytes(), entries * (8 * 4 + 8 * 4 + 8 + 4)) << "after token " << t;
    EXPECT_EQ(cache.full_bytes(), 2 * 2 * 3 * (t + 1) * 8 * 4);
  }
  // Evicted at 8 and 16 to k_keep(16) = max(4, 8) = 8 entries, then 4 more tokens.
  EXPECT_EQ(cache.length(), 12);
}

TEST(KVCache, EvictionKeepsTheRecencyWindowAndTheBudget) {
  torch::manual_seed(64);
  LayerKVCache cache(evicting(0.3));
  for (int64_t t = 0; t < 40; ++t) {
    cache.append(torch::randn({1, 2, 1, 8}), torch::randn({1, 2, 1, 8}));
    cache.attend(torch::randn({1, 2, 1, 8}) * 3);
    if ((t + 1) % 8 == 0) {
      const int64_t keep = rakv::ops::kv_keep_count(t + 1, 0.3, 4);
      EXPECT_EQ(cache.length(), keep) << "after token " << t;
      const torch::Tensor positions = cache.positions();
      for (int64_t recent = t - 2; recent <= t; ++recent) {
        EXPECT_TRUE((positions == recent).any(-1).all().item<bool>()) << "lost recent token " << recent;
      }
      EXPECT_TRUE(torch::equal(std::get<0>(positions.sort(-1)), positions));
    }
  }
}

TEST(KVCache, KVSpliceHoldsLatentsAndDecompressesValues) {
  torch::manual_seed(65);
  rakv::nn::KVSpliceOptions options;
  options.head_dim = 8;
  options.latent_dim = 3;
  rakv::nn::KVSplice splice(options);
  splice->fit(torch::randn({512, 8}), {});
  KVCachePolicy policy;
  policy.kvsplice = splice;
  LayerKVCache cache(policy);
  const torch::Tensor v = torch::randn({1, 2, 6, 8});
  cache.append(torch::randn({1, 2, 6, 8}), v);
  EXPECT_EQ(cache.bytes(), (1 * 2 * 6) * (8 + 3) * 4);
  EXPECT_LT(relative_error(cache.values(), splice->decompress(splice->compress(v))), 1e-6);
  options.head_dim = 16;
  KVCachePolicy wrong;
  wrong.kvsplice = rakv::nn::KVSplice(options);
  LayerKVCache mismatched(wrong);
  expect_error_containing([&] { mismatched.append(torch::randn({1, 2, 1, 8}), torch::randn({1, 2, 1, 8})); },
                          "KVSplice was fitted for head dim 16 but the cache holds head dim 8");
}

TEST(KVCache, StreamingEvalAtKeepOneEqualsThePlainPerplexity) {
  auto model = small_model();
  const auto text = random_text(2000);
  const auto cfg = small_config();
  const auto full = rakv::apps::streaming_perplexity(model, text, 480, rakv::apps::cache_policies(cfg, 2, 1.0, nullptr));
  EXPECT_NEAR(full.perplexity, rakv::apps::full_perplexity(model, text, 480), 1e-4 * full.perplexity);
  EXPECT_EQ(full.cache_bytes, full.full_cache_bytes);
  const auto pruned = rakv::apps::streaming_perplexity(model, text, 480, rakv::apps::cache_policies(cfg, 2, 0.3, nullptr));
  EXPECT_LT(pruned.cache_bytes, full.cache_bytes);
  EXPECT_NE(pruned.perplexity, full.perplexity);
}

// `rakv eval`: one row per keep ratio, in the CSV too; ratios whose budgets both floor at
// CONFIG_KV_K_MIN keep the same cache, which the log says instead of leaving two equal
// perplexities unexplained.
TEST(KVCache, EvalWritesEveryBudgetAndNotesBudgetsThatKeepTheSameCache) {
  rakv::testing::TempDir dir;
  auto model = small_model();
  const std::string checkpoint = dir.file("model.safetensors");
  rakv::model::save_model(checkpoint, *model, small_config(), 0);
  rakv::apps::EvalOptions options;
  options.checkpoint = checkpoint;
  options.keep_ratios = {1.0, 0.01, 0.5, 0.02};
  options.tokens = 96;
  options.out_dir = dir.file("eval");
  std::ostringstream log;
  const auto rows = rakv::apps::run_eval(options, log);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].cache_bytes, rows[0].full_cache_bytes);
  EXPECT_LT(rows[2].cache_bytes, rows[0].cache_bytes);
  EXPECT_LT(rows[1].cache_bytes, rows[2].cache_bytes);
  EXPECT_EQ(rows[3].cache_bytes, rows[1].cache_bytes);
  EXPECT_NE(log.str().find("note: keep=0.01 and keep=0.02 keep the same cache"), std::string::npos)
      << log.str();
  EXPECT_EQ(log.str().find("note: keep=1.00"), std::string::npos) << log.str();
  std::ifstream csv(dir.file("eval/eval.csv"));
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 5);
}

TEST(KVCache, BadBudgetsAndForeignKVSpliceFilesGiveClearErrors) {
  expect_error_containing([] { LayerKVCache{evicting(0.0)}; }, "budget (keep ratio) must be in (0, 1]");
  expect_error_containing([] { rakv::apps::cache_policies(small_config(), 2, -0.5, nullptr); },
                          "KV budget (keep ratio) must be in (0, 1]");
  auto model = small_model();
  const auto text = random_text(4000);
  rakv::apps::CalibrationOptions calibration;
  calibration.tokens = 960;
  calibration.latent_dim = 32;  // head dim is 16
  std::ostringstream log;
  expect_error_containing([&] { rakv::apps::calibrate_kvsplice(model, text, calibration, log); },
                          "latent size must be in [1, head dim = 16], got 32");
  calibration.latent_dim = 4;
  calibration.fit.epochs = 1;
  const auto set = rakv::apps::calibrate_kvsplice(model, text, calibration, log);
  rakv::testing::TempDir dir;
  rakv::apps::save_kvsplice_set(dir.file("k.safetensors"), set);
  auto other = small_config();
  other.set("CONFIG_N_HEAD", "4");
  expect_error_containing(
      [&] { rakv::apps::load_kvsplice_set(dir.file("k.safetensors"), rakv::model::gpt2_config_from(other)); },
      "was fitted for head dim 16, but head dim 8 was expected");
  const auto loaded = rakv::apps::load_kvsplice_set(dir.file("k.safetensors"), model->config());
  EXPECT_EQ(loaded.layers.size(), 2u);
  const torch::Tensor v = torch::randn({10, 16});
  EXPECT_TRUE(torch::equal(loaded.layers[1]->compress(v), set.layers[1]->compress(v)));
}

}  // namespace
