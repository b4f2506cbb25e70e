// Training: loss goes down on the packaged text, runs are reproducible, resume continues the same
// loss curve, delayed gate activation, and the files a run writes.
#include "rakv/apps/train.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "rakv/model/checkpoint.h"
#include "test_helpers.h"

namespace {

using rakv::config::Config;
using rakv::testing::TempDir;

// The tiny-ra-rmlp defconfig shrunk so that a test trains in seconds.
Config fast_config(int64_t steps) {
  Config cfg = Config::parse_file(std::string(RAKV_SOURCE_DIR) + "/configs/defconfigs/tiny-ra-rmlp");
  cfg.set("CONFIG_N_LAYER", "2");
  cfg.set("CONFIG_N_EMBD", "64");
  cfg.set("CONFIG_RMLP_R_FF", "32");
  cfg.set("CONFIG_BLOCK_SIZE", "64");
  cfg.set("CONFIG_BATCH_SIZE", "8");
  cfg.set("CONFIG_MAX_ITERS", std::to_string(steps));
  cfg.set("CONFIG_WARMUP_ITERS", "5");
  cfg.set("CONFIG_EVAL_INTERVAL", "10");
  cfg.set("CONFIG_EVAL_ITERS", "4");
  return cfg;
}

rakv::apps::TrainResult train(const Config& cfg, const std::string& out, bool resume = false,
                              std::optional<int64_t> stop_after = std::nullopt) {
  rakv::apps::TrainOptions options;
  options.config = cfg;
  options.out_dir = out;
  options.resume = resume;
  options.stop_after = stop_after;
  options.progress = false;
  std::ostringstream log;
  return rakv::apps::train(options, log);
}

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream s(line);
    std::string field;
    while (std::getline(s, field, ',')) fields.push_back(field);
    if (!line.empty() && line.back() == ',') fields.emplace_back();
    rows.push_back(fields);
  }
  return rows;
}

TEST(Training, TinyRaRmlpLowersValidationLossByAClearMargin) {
  TempDir dir;
  const auto result = train(fast_config(60), dir.path());
  // Byte-level text starts at ~ln(256) = 5.5 nats; 60 steps must reach well under 3.
  EXPECT_GT(result.initial_val_loss, 5.0);
  EXPECT_LT(result.final_val_loss, 0.6 * result.initial_val_loss);
  for (const char* file : {"log.csv", "model.safetensors", "checkpoint.safetensors", "config"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.file(file))) << file;
  }
  const auto rows = read_csv(dir.file("log.csv"));
  ASSERT_EQ(rows.size(), 62u);  // header, step 0, steps 1..60
  EXPECT_EQ(rows[0], (std::vector<std::string>{"step", "train_loss", "val_loss", "lr", "tokens_per_s"}));
  EXPECT_EQ(rows[5][0], "4");
  EXPECT_EQ(rows[5][2], "");     // not an eval step
  EXPECT_NE(rows[11][2], "");    // step 10 is
  EXPECT_EQ(Config::parse_file(dir.file("config")), fast_config(60));
}

TEST(Training, SameSeedSameLossCurve) {
  TempDir a, b;
  train(fast_config(12), a.path());
  train(fast_config(12), b.path());
  EXPECT_EQ(read_csv(a.file("log.csv")).size(), 14u);
  const auto rows_a = read_csv(a.file("log.csv"));
  const auto rows_b = read_csv(b.file("log.csv"));
  for (size_t i = 1; i < rows_a.size(); ++i) EXPECT_EQ(rows_a[i][1], rows_b[i][1]) << "row " << i;
}

TEST(Training, ResumeContinuesTheSameLossCurve) {
  TempDir straight, resumed;
  train(fast_config(20), straight.path());
  const auto first = train(fast_config(20), resumed.path(), false, 7);
  EXPECT_EQ(first.last_step, 7);
  const auto second = train(fast_config(20), resumed.path(), true);
  EXPECT_EQ(second.first_step, 7);
  EXPECT_EQ(second.last_step, 20);
  const auto a = read_csv(straight.file("log.csv"));
  const auto b = read_csv(resumed.file("log.csv"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 1; i < a.size(); ++i) {
    EXPECT_EQ(a[i][0], b[i][0]);
    EXPECT_NEAR(std::stod(a[i][1].empty() ? "0" : a[i][1]), std::stod(b[i][1].empty() ? "0" : b[i][1]), 1e-6)
        << "step " << a[i][0];
  }
  EXPECT_NEAR(std::stod(a.back()[2]), std::stod(b.back()[2]), 1e-6);
}

TEST(Training, ReciprocalGatesStayOffUntilTheirWarmupEnds) {
  TempDir dir;
  Config cfg = fast_config(8);
  cfg.set("CONFIG_RA_GATE_WARMUP_STEPS", "4");
  train(cfg, dir.path(), false, 3);
  for (const auto& layer : rakv::model::load_model(dir.file("model.safetensors")).model->reciprocal_attention_layers()) {
    EXPECT_EQ(layer->w_rec.abs().max().item<double>(), 0.0);
  }
  train(cfg, dir.path(), true);
  for (const auto& layer : rakv::model::load_model(dir.file("model.safetensors")).model->reciprocal_attention_layers()) {
    // Activated at 0.1 after step 4, then trained for 4 more steps.
    EXPECT_GT(layer->w_rec.abs().min().item<double>(), 0.05);
    EXPECT_NE(layer->w_rec.item<double>(), 0.1);
  }
}

TEST(Training, LearningRateScheduleWarmsUpThenDecays) {
  EXPECT_DOUBLE_EQ(rakv::apps::learning_rate_at(1, 10, 100, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(rakv::apps::learning_rate_at(10, 10, 100, 1.0, 0.1), 1.0);
  EXPECT_NEAR(rakv::apps::learning_rate_at(55, 10, 100, 1.0, 0.1), 0.55, 1e-12);
  EXPECT_DOUBLE_EQ(rakv::apps::learning_rate_at(100, 10, 100, 1.0, 0.1), 0.1);
}

}  // namespace
