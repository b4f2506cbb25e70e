// GPT-2 model: causality through the whole model, cached generation equals full recomputation,
// bit-exact checkpoint round trips, and readable errors for bad tokens and bad files.
#include "rakv/model/gpt2.h"

#include <fstream>

#include "rakv/io/atomic_file.h"
#include "rakv/model/checkpoint.h"
#include "test_helpers.h"

namespace {

using rakv::config::Config;
using rakv::testing::expect_error_containing;
using rakv::testing::relative_error;
using rakv::testing::TempDir;

Config small_config(const std::string& attention_layers = "all", const std::string& mlp_layers = "0") {
  Config cfg;
  cfg.set("CONFIG_N_LAYER", "3");
  cfg.set("CONFIG_N_HEAD", "2");
  cfg.set("CONFIG_N_EMBD", "32");
  cfg.set("CONFIG_BLOCK_SIZE", "24");
  cfg.set("CONFIG_RMLP_R_FF", "16");
  cfg.set("CONFIG_RA_LAYERS", attention_layers);
  cfg.set("CONFIG_RMLP_LAYERS", mlp_layers);
  cfg.set("CONFIG_RA_PER_HEAD_GATES", "y");
  cfg.set("CONFIG_RA_SELF_RESTART", "y");
  return cfg;
}

rakv::model::GPT2 make_model(const Config& cfg) {
  torch::manual_seed(21);
  return rakv::model::GPT2(rakv::model::gpt2_config_from(cfg));
}

// The fused loss (ops::cross_entropy_loss) equals LibTorch's cross-entropy of forward()'s logits,
// with RA and R-MLP layers and a vocabulary that is not a multiple of 64.
TEST(GPT2, LossIsTheCrossEntropyOfTheLogits) {
  Config cfg = small_config("0,2", "1");
  cfg.set("CONFIG_VOCAB_SIZE", "61");
  auto model = make_model(cfg);
  const torch::Tensor idx = torch::randint(0, 61, {2, 24}, torch::kInt64);
  const torch::Tensor targets = torch::randint(0, 61, {2, 24}, torch::kInt64);
  const torch::Tensor expected = torch::nn::functional::cross_entropy(
      model->forward(idx).reshape({-1, 61}), targets.reshape({-1}));
  EXPECT_NEAR(model->loss(idx, targets).item<double>(), expected.item<double>(), 1e-6);
}

// Checkpointed blocks give the loss and every gradient of the plain run (same values, one more
// forward per block), and refuse the settings whose recompute would differ.
TEST(GPT2, ActivationCheckpointingGivesTheSameLossAndGradients) {
  Config cfg = small_config("0,2", "1");
  auto plain = make_model(cfg);
  cfg.set("CONFIG_ACTIVATION_CHECKPOINTING", "y");
  auto checkpointed = make_model(cfg);  // same seed: same initial weights
  const torch::Tensor idx = torch::randint(0, 256, {2, 24}, torch::kInt64);
  const torch::Tensor targets = torch::randint(0, 256, {2, 24}, torch::kInt64);
  const torch::Tensor expected = plain->loss(idx, targets);
  expected.backward();
  const torch::Tensor loss = checkpointed->loss(idx, targets);
  loss.backward();
  EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-6);
  const auto want = plain->named_parameters();
  const auto got = checkpointed->named_parameters();
  ASSERT_EQ(want.size(), got.size());
  for (const auto& item : want) {
    ASSERT_TRUE(got[item.key()].grad().defined()) << item.key() << " got no gradient";
    EXPECT_LT(relative_error(got[item.key()].grad(), item.value().grad()), 1e-5) << item.key();
  }
  Config with_dropout = cfg;
  with_dropout.set("CONFIG_DROPOUT", "0.1");
  rakv::testing::expect_error_containing([&] { rakv::model::gpt2_config_from(with_dropout); },
                                         "needs CONFIG_DROPOUT=0 (got 0.1)");
  Config with_pruning = cfg;
  with_pruning.set("CONFIG_KV_PRUNE", "y");
  with_pruning.set("CONFIG_RA", "n");  // a layer is RA or PrunedKV, not both
  rakv::testing::expect_error_containing([&] { rakv::model::gpt2_config_from(with_pruning); },
                                         "cannot be combined with CONFIG_KV_PRUNE=y");
}

TEST(GPT2, MixesLayerKindsAsConfigured) {
  auto model = make_model(small_config("0,2", "1"));
  EXPECT_EQ(model->reciprocal_attention_layers().size(), 2u);
  EXPECT_EQ(model->reciprocal_mlp_layers().size(), 1u);
  const torch::Tensor logits = model->forward(torch::randint(0, 256, {2, 10}, torch::kInt64));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 10, 256}));
}

TEST(GPT2, CausalFutureTokensNeverChangePastLogits) {
  auto model = make_model(small_config());
  model->eval();
  const torch::Tensor idx = torch::randint(0, 256, {2, 20}, torch::kInt64);
  const torch::Tensor logits = model->forward(idx);
  for (int64_t i : {0, 9, 18}) {
    torch::Tensor changed = idx.clone();
    changed.narrow(1, i + 1, 20 - i - 1).random_(0, 256);
    const torch::Tensor logits2 = model->forward(changed);
    EXPECT_TRUE(torch::allclose(logits.narrow(1, 0, i + 1), logits2.narrow(1, 0, i + 1), 0, 1e-5)) << i;
  }
}

TEST(GPT2, CachedGenerationEqualsFullRecomputation) {
  auto model = make_model(small_config("0,1", "all"));
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor idx = torch::randint(0, 256, {1, 16}, torch::kInt64);
  const torch::Tensor full = model->forward(idx);
  auto cache = model->new_cache();
  std::vector<torch::Tensor> steps = {model->forward_cached(idx.narrow(1, 0, 6), cache)};
  for (int64_t t = 6; t < 16; ++t) steps.push_back(model->forward_cached(idx.narrow(1, t, 1), cache));
  EXPECT_LT(relative_error(torch::cat(steps, 1), full), 1e-5);
  EXPECT_EQ(cache.position, 16);
  // 3 layers x (K and V) x [1, 2 heads, 16, 16] float32
  EXPECT_EQ(cache.bytes(), 3 * 2 * 1 * 2 * 16 * 16 * 4);
}

TEST(GPT2, RejectsSequencesLongerThanTheBlockAndBadTokens) {
  auto model = make_model(small_config());
  expect_error_containing([&] { model->forward(torch::zeros({1, 25}, torch::kInt64)); },
                          "sequence of 25 tokens exceeds the block size 24 (CONFIG_BLOCK_SIZE)");
  expect_error_containing([&] { model->forward(torch::full({1, 3}, 256, torch::kInt64)); },
                          "token ids must be in [0, 256)");
  expect_error_containing([&] { model->forward(torch::zeros({1, 3}, torch::kInt32)); }, "int64 token ids");
}

TEST(GPT2, CheckpointRoundTripsBitExactly) {
  const Config cfg = small_config();
  auto model = make_model(cfg);
  TempDir dir;
  rakv::model::save_model(dir.file("m.safetensors"), *model, cfg, 42);
  rakv::model::LoadedModel loaded = rakv::model::load_model(dir.file("m.safetensors"));
  EXPECT_EQ(loaded.step, 42);
  EXPECT_EQ(loaded.config, cfg);
  const auto original = model->named_parameters();
  for (const auto& p : loaded.model->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), original[p.key()])) << p.key();
  }
  model->eval();
  loaded.model->eval();
  const torch::Tensor idx = torch::randint(0, 256, {2, 12}, torch::kInt64);
  EXPECT_TRUE(torch::equal(model->forward(idx), loaded.model->forward(idx)));
}

TEST(GPT2, MissingTruncatedOrForeignCheckpointsGiveClearErrors) {
  const Config cfg = small_config();
  auto model = make_model(cfg);
  TempDir dir;
  expect_error_containing([&] { rakv::model::load_model(dir.file("nope.safetensors")); }, "cannot open");
  rakv::model::save_model(dir.file("m.safetensors"), *model, cfg, 1);
  const std::string bytes = rakv::io::read_file(dir.file("m.safetensors"));
  rakv::io::write_file_atomically(dir.file("cut.safetensors"), bytes.substr(0, bytes.size() / 2));
  expect_error_containing([&] { rakv::model::load_model(dir.file("cut.safetensors")); },
                          "not a valid safetensors file");
  rakv::io::save_safetensors(dir.file("foreign.safetensors"), {{"w", torch::ones({2})}});
  expect_error_containing([&] { rakv::model::load_model(dir.file("foreign.safetensors")); },
                          "not a rakv checkpoint");
  // Weights of a different shape than the configuration in the metadata.
  Config other = cfg;
  other.set("CONFIG_N_EMBD", "64");
  rakv::model::save_model(dir.file("mismatch.safetensors"), *model, other, 1);
  expect_error_containing([&] { rakv::model::load_model(dir.file("mismatch.safetensors")); },
                          "weights do not fit the model");
}

}  // namespace
