// The bad-input catalogue of docs/reliability.md: what a user sees for each input they can get
// wrong. Every row of the document names the test that checks its message; rows already covered
// by the suites of their area (test_cli.cpp, test_config.cpp, test_safetensors.cpp, ...) name
// those tests, and BadInputs.CatalogueNamesOnlyExistingTests keeps the names honest.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <set>

#include "rakv/apps/generate.h"
#include "rakv/apps/train.h"
#include "rakv/config.h"
#include "rakv/io/atomic_file.h"
#include "rakv/model/checkpoint.h"
#include "rakv/ops.h"
#include "test_helpers.h"

namespace {

namespace fs = std::filesystem;
using rakv::config::Config;
using rakv::testing::expect_clean_failure;
using rakv::testing::expect_error_containing;
using rakv::testing::run_cli;
using rakv::testing::TempDir;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

void expect_config_error(const std::string& text, const std::string& needle) {
  SCOPED_TRACE(text);
  expect_error_containing([&] { Config::parse_text(text, "f"); }, needle);
}

TEST(BadInputs, ConfigNumbersBeyondWhatTheirTypeHolds) {
  expect_config_error("CONFIG_SEED=99999999999999999999\n",
                      "f:1: CONFIG_SEED must be an integer, got '99999999999999999999'");
  expect_config_error("CONFIG_N_LAYER=2.5\n", "CONFIG_N_LAYER must be an integer, got '2.5'");
  expect_config_error("CONFIG_LEARNING_RATE=1e400\n",
                      "CONFIG_LEARNING_RATE must be a finite number, got '1e400'");
  expect_config_error("CONFIG_LEARNING_RATE=inf\n", "must be a finite number, got 'inf'");
  // Underflow: accepted once, it made every later read of the option throw std::out_of_range.
  expect_config_error("CONFIG_MIN_LR=1e-400\n",
                      "CONFIG_MIN_LR must be a finite number, got '1e-400' (beyond the precision "
                      "of a double)");
  EXPECT_DOUBLE_EQ(Config::parse_text("CONFIG_MIN_LR=1e-300\n", "f").get_float("CONFIG_MIN_LR"),
                   1e-300);
}

TEST(BadInputs, ConfigFloatOutOfRange) {
  expect_config_error("CONFIG_DROPOUT=1.5\n", "f:1: CONFIG_DROPOUT must be in [0, 0.99], got 1.5");
  expect_config_error("CONFIG_VAL_FRACTION=0\n",
                      "CONFIG_VAL_FRACTION must be in [0.01, 0.5], got 0");
  expect_config_error("CONFIG_LEARNING_RATE=-1e-3\n",
                      "CONFIG_LEARNING_RATE must be in [0, 10], got -1e-3");
}

TEST(BadInputs, ConfigNotSetLineOnANonBoolOption) {
  expect_config_error("# CONFIG_DEVICE is not set\n",
                      "f:1: CONFIG_DEVICE is not a bool option and cannot be 'not set'");
}

// A string option holding a newline printed as a `.config` line that no longer parsed (the run's
// own `config` file and checkpoint metadata), and non-UTF-8 bytes made every checkpoint save
// throw a JSON error after training had started.
TEST(BadInputs, ConfigStringsMustBeOneLineOfUtf8) {
  Config cfg;
  expect_error_containing([&] { cfg.apply_assignment("CONFIG_SAMPLE_PROMPT=one\ntwo"); },
                          "--set: CONFIG_SAMPLE_PROMPT must be a single line (it contains a "
                          "newline)");
  expect_config_error("CONFIG_SAMPLE_PROMPT=\"caf\xe9\"\n",
                      "f:1: CONFIG_SAMPLE_PROMPT must be valid UTF-8 text");
  for (const char* bad : {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff"}) {
    SCOPED_TRACE(bad);
    expect_error_containing([&] { cfg.set("CONFIG_DATA", bad); }, "must be valid UTF-8 text");
  }
  cfg.set("CONFIG_SAMPLE_PROMPT", "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
  EXPECT_EQ(Config::parse_text(cfg.to_text(), "round trip"), cfg);
}

TEST(BadInputs, ConfigImpossibleCombinationsBeyondTheHeadDimension) {
  Config cfg;
  cfg.set("CONFIG_RMLP_TIED", "y");
  cfg.set("CONFIG_RMLP_R_FF", "300");
  expect_error_containing([&] { rakv::model::gpt2_config_from(cfg); },
                          "CONFIG_RMLP_TIED needs CONFIG_RMLP_R_FF (300) <= half the MLP width "
                          "256");
  cfg = Config();
  cfg.set("CONFIG_RMLP_LAYERS", "4");
  expect_error_containing([&] { rakv::model::gpt2_config_from(cfg); },
                          "CONFIG_RMLP_LAYERS lists layer 4 but the model has 4 layers");
  cfg = Config();
  cfg.set("CONFIG_RA_LAYERS", "0,");
  expect_error_containing([&] { rakv::model::gpt2_config_from(cfg); },
                          "CONFIG_RA_LAYERS: expected \"all\", \"none\" or layer indices like "
                          "0,2,3, got '0,'");
}

// Problems that only `rakv train` can see: each fails before the output directory exists.
TEST(BadInputs, TrainingInputsRejectedBeforeAnythingIsWritten) {
  TempDir dir;
  const std::string out = dir.file("run");
  auto train_error = [&](Config cfg, const std::string& needle) {
    SCOPED_TRACE(needle);
    rakv::apps::TrainOptions options;
    options.config = std::move(cfg);
    options.out_dir = out;
    options.progress = false;
    std::ostringstream log;
    expect_error_containing([&] { rakv::apps::train(options, log); }, needle);
    EXPECT_FALSE(fs::exists(out));
  };
  Config cfg;
  cfg.set("CONFIG_VOCAB_SIZE", "100");
  train_error(cfg, "CONFIG_VOCAB_SIZE (100) must be at least 256 for byte-level text");

  cfg = Config();
  cfg.set("CONFIG_DATA", dir.file("missing.txt"));
  train_error(cfg, dir.file("missing.txt") + ": cannot open: No such file or directory");

  rakv::io::write_file_atomically(dir.file("empty.txt"), "");
  cfg.set("CONFIG_DATA", dir.file("empty.txt"));
  train_error(cfg, "training text '" + dir.file("empty.txt") + "' is empty or too small to split");

  rakv::io::write_file_atomically(dir.file("short.txt"), std::string(200, 'a'));
  cfg.set("CONFIG_DATA", dir.file("short.txt"));
  train_error(cfg, "the text holds 20 tokens, fewer than CONFIG_BLOCK_SIZE + 1 = 129");

  if (!torch::cuda::is_available()) {
    cfg = Config();
    cfg.set("CONFIG_DEVICE", "cuda");
    train_error(cfg, "CONFIG_DEVICE=cuda but no CUDA device is usable");
  }

  cfg = Config();
  cfg.set("CONFIG_CUDA_GRAPHS", "y");
  train_error(cfg, "CONFIG_CUDA_GRAPHS needs CONFIG_DEVICE=cuda");
  cfg.set("CONFIG_RA", "n");
  cfg.set("CONFIG_RMLP", "n");
  cfg.set("CONFIG_KV_PRUNE", "y");
  cfg.set("CONFIG_DEVICE", "cuda");
  train_error(cfg, "CONFIG_CUDA_GRAPHS cannot be combined with CONFIG_KV_PRUNE=y: PrunedKV "
                   "advances its selection seed and importance EMA on the host");
}

TEST(BadInputs, ConfigFilesThatCannotBeRead) {
  TempDir dir;
  expect_error_containing([&] { Config::parse_file(dir.file("nope.config")); },
                          dir.file("nope.config") + ": cannot open config file");
  expect_clean_failure(
      run_cli("train --out '" + dir.file("run") + "' --config '" + dir.file("nope.config") + "'"),
      "--config: File does not exist: " + dir.file("nope.config"));
  expect_clean_failure(run_cli("config --check '" + dir.path() + "'"),
                       "--check: File is actually a directory: " + dir.path());
  EXPECT_FALSE(fs::exists(dir.file("run")));
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

// The configuration text `extra` over a one-layer model small enough for tests.
Config tiny_config(const std::string& extra = "") {
  return Config::parse_text(
      "CONFIG_N_LAYER=1\nCONFIG_N_HEAD=2\nCONFIG_N_EMBD=16\nCONFIG_BLOCK_SIZE=16\n"
      "CONFIG_RMLP_R_FF=8\n" +
          extra,
      "tiny");
}

rakv::model::GPT2 tiny_model() {
  torch::manual_seed(5);
  return rakv::model::GPT2(rakv::model::gpt2_config_from(tiny_config()));
}

// The weights of `model` under `path` with the given metadata (the parts a test corrupts).
void save_with_metadata(const std::string& path, const rakv::io::NamedTensors& tensors,
                        std::map<std::string, std::string> overrides) {
  std::map<std::string, std::string> metadata = {{"format", rakv::model::kModelFormat},
                                                 {"kind", "model"},
                                                 {"config", tiny_config().to_text()},
                                                 {"step", "1"}};
  for (auto& [key, value] : overrides)
    metadata[key] = value;
  rakv::io::save_safetensors(path, tensors, metadata);
}

TEST(BadInputs, CheckpointFilesThatAreNotSafetensors) {
  TempDir dir;
  auto load_error = [&](const std::string& name, const std::string& bytes,
                        const std::string& needle) {
    SCOPED_TRACE(name);
    rakv::io::write_file_atomically(dir.file(name), bytes);
    expect_error_containing([&] { rakv::model::load_model(dir.file(name)); },
                            dir.file(name) + ": " + needle);
  };
  load_error("empty.safetensors", "",
             "not a valid safetensors file: the file is 0 bytes, too short for the 8-byte header "
             "length");
  load_error("past-end.safetensors", std::string("\xff\0\0\0\0\0\0\0{}", 10),
             "not a valid safetensors file: the header length 255 runs past the end of the file "
             "(10 bytes)");
  load_error("text.safetensors", std::string("\x05\0\0\0\0\0\0\0hello", 13),
             "not a valid safetensors file: the header is not valid JSON");
  auto model = tiny_model();
  rakv::model::save_model(dir.file("m.safetensors"), *model, tiny_config(), 1);
  const std::string bytes = rakv::io::read_file(dir.file("m.safetensors"));
  load_error("truncated.safetensors", bytes.substr(0, bytes.size() - 1),
             "not a valid safetensors file: tensor '");
  expect_error_containing([&] { rakv::model::load_model(dir.path()); },
                          dir.path() + ": cannot open: Is a directory");
  expect_clean_failure(run_cli("generate --checkpoint '" + dir.path() + "'"),
                       dir.path() + ": cannot open: Is a directory");
}

TEST(BadInputs, CheckpointMetadataThatIsNotRakvs) {
  TempDir dir;
  const auto weights = rakv::model::module_state(*tiny_model());
  auto metadata_error = [&](std::map<std::string, std::string> overrides,
                            const std::string& needle) {
    SCOPED_TRACE(needle);
    save_with_metadata(dir.file("m.safetensors"), weights, std::move(overrides));
    expect_error_containing([&] { rakv::model::load_model(dir.file("m.safetensors")); },
                            dir.file("m.safetensors") + needle);
  };
  metadata_error({{"format", "other/2"}},
                 ": unsupported checkpoint format 'other/2' (expected rakv-gpt2/1)");
  metadata_error({{"kind", "weights"}}, ": unknown checkpoint kind 'weights'");
  metadata_error({{"step", "-1"}}, ": checkpoint metadata has a malformed step '-1'");
  metadata_error({{"step", "12abc"}}, ": checkpoint metadata has a malformed step '12abc'");
  metadata_error({{"config", "CONFIG_N_LAYER=1\nCONFIG_BOGUS=2\n"}},
                 " [metadata]:2: unknown option CONFIG_BOGUS");
  rakv::io::save_safetensors(dir.file("m.safetensors"), weights, {{"format", "rakv-gpt2/1"}});
  expect_error_containing([&] { rakv::model::load_model(dir.file("m.safetensors")); },
                          ": not a rakv checkpoint (no 'kind' in its metadata)");
}

TEST(BadInputs, CheckpointWeightsThatDoNotFitTheConfig) {
  TempDir dir;
  auto weights = rakv::model::module_state(*tiny_model());
  const std::string path = dir.file("m.safetensors");
  auto without = [&](const std::string& name) {
    rakv::io::NamedTensors kept;
    for (const auto& entry : weights) {
      if (entry.first != name)
        kept.push_back(entry);
    }
    return kept;
  };
  save_with_metadata(path, without("wte.weight"), {});
  expect_error_containing([&] { rakv::model::load_model(path); },
                          path + ": weights do not fit the model: ");
  expect_error_containing([&] { rakv::model::load_model(path); }, "missing 'wte.weight'");
  auto extra = weights;
  extra.emplace_back("extra.weight", torch::ones({2}));
  save_with_metadata(path, extra, {});
  expect_error_containing([&] { rakv::model::load_model(path); },
                          path + ": weights do not fit the model: unexpected 'extra.weight'");

  // Another dtype is converted to the parameter's on load, value for value.
  rakv::io::NamedTensors doubles;
  for (const auto& [name, tensor] : weights)
    doubles.emplace_back(name, tensor.to(torch::kFloat64));
  save_with_metadata(path, doubles, {});
  const auto loaded = rakv::model::load_model(path);
  const auto original = std::map<std::string, torch::Tensor>(weights.begin(), weights.end());
  for (const auto& p : loaded.model->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), original.at(p.key()))) << p.key();
  }
}

// The writer refuses what the reader would reject or JSON cannot hold, before any file exists.
TEST(BadInputs, SafetensorsWriterRefusesNamesTheFormatCannotHold) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  expect_error_containing(
      [&] {
        rakv::io::save_safetensors(path, {{"__metadata__", torch::ones({1})}});
      },
      "cannot save tensor '__metadata__': duplicate or reserved name");
  expect_error_containing(
      [&] {
        rakv::io::save_safetensors(path, {{"w\xff", torch::ones({1})}});
      },
      "cannot save: tensor names and metadata must be valid UTF-8");
  expect_error_containing(
      [&] {
        rakv::io::save_safetensors(path, {{"w", torch::ones({1})}}, {{"note", "\xc3"}});
      },
      "cannot save: tensor names and metadata must be valid UTF-8");
  EXPECT_FALSE(fs::exists(path));
}

// An empty tensor laid out where the next one begins is no overlap. The reader sorted tensors
// by offset and, depending on the order of the tie, refused files its own writer had made.
TEST(BadInputs, EmptyTensorsOverlapNothing) {
  TempDir dir;
  const std::string path = dir.file("e.safetensors");
  rakv::io::save_safetensors(
      path, {{"x", torch::ones({2})}, {"b", torch::zeros({0})}, {"a", torch::ones({2})}});
  const auto loaded = rakv::io::load_safetensors(path);
  EXPECT_EQ(loaded.tensors.at("b").numel(), 0);
  EXPECT_TRUE(torch::equal(loaded.tensors.at("a"), torch::ones({2})));
}

// A model saved from a diverged run loaded, then printed NUL bytes (greedy) or failed inside
// torch::multinomial; training now never writes one, and loading refuses it.
TEST(BadInputs, CheckpointWithNaNOrInfWeights) {
  TempDir dir;
  auto weights = rakv::model::module_state(*tiny_model());
  const std::string path = dir.file("m.safetensors");
  for (double bad : {kNaN, kInf}) {
    SCOPED_TRACE(bad);
    auto poisoned = weights;
    for (auto& [name, tensor] : poisoned) {
      if (name == "wpe.weight")
        tensor = tensor.clone().index_put_({0, 0}, bad);
    }
    save_with_metadata(path, poisoned, {});
    expect_error_containing([&] { rakv::model::load_model(path); },
                            path +
                                ": tensor 'wpe.weight' holds NaN or Inf values (saved from a "
                                "diverged run?)");
  }
}

TEST(BadInputs, ResumeFromTheWrongState) {
  TempDir dir;
  const std::string out = dir.file("run");
  const std::string tiny =
      " --set CONFIG_N_LAYER=1 --set CONFIG_N_HEAD=2 --set CONFIG_N_EMBD=16 --set "
      "CONFIG_RMLP_R_FF=8 --set CONFIG_BLOCK_SIZE=16 --set CONFIG_BATCH_SIZE=2 --set "
      "CONFIG_EVAL_ITERS=1 --set CONFIG_MAX_ITERS=3";
  const auto trained = run_cli("train --no-progress --out '" + out + "'" + tiny);
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  expect_clean_failure(run_cli("train --no-progress --resume --out '" + out + "'"),
                       "nothing to do: the run is already at step 3");
  expect_clean_failure(
      run_cli("train --no-progress --resume --out '" + out + "' --set CONFIG_MAX_ITERS=2"),
      "--resume: the checkpoint is at step 3, past CONFIG_MAX_ITERS=2");
  expect_clean_failure(
      run_cli("train --no-progress --resume --out '" + out + "' --config '" + out + "/config'"),
      "--resume takes the configuration from the checkpoint; change options "
      "with --set");
  const std::string checkpoint = out + "/checkpoint.safetensors";

  // The optimizer state of one parameter with the wrong shape.
  rakv::io::TensorFile file = rakv::io::load_safetensors(checkpoint);
  rakv::io::NamedTensors tensors(file.tensors.begin(), file.tensors.end());
  for (auto& [name, tensor] : tensors) {
    if (name == "adamw.exp_avg.wte.weight")
      tensor = torch::zeros({3});
  }
  rakv::io::save_safetensors(checkpoint, tensors, file.metadata);
  expect_clean_failure(
      run_cli("train --no-progress --resume --out '" + out + "' --set CONFIG_MAX_ITERS=4"),
      checkpoint + ": optimizer state of 'wte.weight' is incomplete or mis-shaped");

  // model.safetensors where the training state belongs.
  fs::copy_file(out + "/model.safetensors", checkpoint, fs::copy_options::overwrite_existing);
  expect_clean_failure(
      run_cli("train --no-progress --resume --out '" + out + "' --set CONFIG_MAX_ITERS=4"),
      checkpoint + ": holds only model weights, not a training state");
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

TEST(BadInputs, CliMissingArguments) {
  expect_clean_failure(run_cli(""), "A subcommand is required");
  expect_clean_failure(run_cli("generate --tokens 3"), "--checkpoint is required");
  expect_clean_failure(run_cli("train --out x --set"), "--set: 1 required TEXT missing");
}

// CLI11's own range validators printed DBL_MAX in full (a 300-digit line), also for "abc".
TEST(BadInputs, CliNumbersOutOfRange) {
  const std::string gen = "generate --checkpoint never-read.safetensors ";
  expect_clean_failure(run_cli(gen + "--tokens -1"), "--tokens: must be non-negative, got -1");
  expect_clean_failure(run_cli(gen + "--tokens abc"), "--tokens: 'abc' is not a number");
  expect_clean_failure(run_cli(gen + "--tokens 1.5"), "Could not convert: --tokens = 1.5");
  expect_clean_failure(run_cli(gen + "--temperature -0.5"),
                       "--temperature: must be non-negative, got -0.5");
  expect_clean_failure(run_cli(gen + "--top-k -2"), "--top-k: must be non-negative, got -2");
  expect_clean_failure(run_cli(gen + "--seed -1"), "--seed: must be non-negative, got -1");
  expect_clean_failure(run_cli("train --out x --stop-after 0"),
                       "--stop-after: must be positive, got 0");
  expect_clean_failure(run_cli("train --out x --stop-after -3"),
                       "--stop-after: must be positive, got -3");
  EXPECT_FALSE(fs::exists("x"));
}

// bench-train checks its options before it builds a model or writes an export directory.
TEST(BadInputs, BenchTrainRefusesWhatThisRunCannotDo) {
  TempDir dir;
  expect_clean_failure(run_cli("bench-train --steps 1 --profile"),
                       "bench-train --profile needs CONFIG_DEVICE=cuda in a build with "
                       "-DRAKV_CUDA=ON");
  expect_clean_failure(run_cli("bench-train --steps 1 --export '" + dir.file("export") +
                               "' --set CONFIG_CUDA_GRAPHS=y"),
                       "CONFIG_CUDA_GRAPHS needs CONFIG_DEVICE=cuda");
  EXPECT_FALSE(fs::exists(dir.file("export")));
}

TEST(BadInputs, CliOutputDirectoryThatIsAFile) {
  TempDir dir;
  rakv::io::write_file_atomically(dir.file("file"), "x");
  expect_clean_failure(
      run_cli("train --no-progress --out '" + dir.file("file") + "' --set CONFIG_MAX_ITERS=1"),
      "cannot create directories: Not a directory [" + dir.file("file") + "]");
  EXPECT_EQ(rakv::io::read_file(dir.file("file")), "x");
}

// ---------------------------------------------------------------------------------------------
// Generation and sequence length
// ---------------------------------------------------------------------------------------------

TEST(BadInputs, GenerateZeroOrNegativeTokens) {
  TempDir dir;
  auto model = tiny_model();
  rakv::model::save_model(dir.file("m.safetensors"), *model, tiny_config(), 1);
  const auto none =
      run_cli("generate --checkpoint '" + dir.file("m.safetensors") + "' --prompt 'Hi' --tokens 0");
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_EQ(none.out, "Hi\n");
  rakv::apps::SamplingOptions options;
  options.tokens = -1;
  expect_error_containing([&] { rakv::apps::generate(model, "Hi", options); },
                          "number of tokens to generate must be >= 0, got -1");
}

TEST(BadInputs, SequencesBeyondTheBlockSize) {
  auto model = tiny_model();  // block size 16
  model->eval();
  torch::NoGradGuard no_grad;
  auto cache = model->new_cache();
  model->forward_cached(torch::zeros({1, 10}, torch::kInt64), cache);
  expect_error_containing(
      [&] {
        model->forward_cached(torch::zeros({1, 7}, torch::kInt64), cache);
      },
      "sequence of 17 tokens exceeds the block size 16 (CONFIG_BLOCK_SIZE)");
  expect_error_containing(
      [&] {
        model->forward(torch::zeros({1, 0}, torch::kInt64));
      },
      "GPT-2 needs at least one token per sequence");
  // A prompt longer than the block keeps its last block of tokens; generation runs past the
  // block by restarting the cache.
  rakv::apps::SamplingOptions options;
  options.tokens = 40;
  const auto result = rakv::apps::generate(model, std::string(50, 'a'), options);
  EXPECT_EQ(result.text.size(), 40u);
}

// ---------------------------------------------------------------------------------------------
// NaN and Inf
// ---------------------------------------------------------------------------------------------

// The decoupled weight decay multiplies the matrices by (1 - lr * decay) = -99 every step: the
// weights overflow within a few steps. Training stops at the first non-finite loss, training or
// validation, before that step writes a checkpoint, so the last checkpoint stays a finite one.
TEST(BadInputs, DivergingTrainingStopsAtTheStep) {
  TempDir dir;
  const Config cfg = tiny_config(
      "CONFIG_BATCH_SIZE=2\nCONFIG_EVAL_ITERS=1\nCONFIG_EVAL_INTERVAL=1\nCONFIG_MAX_ITERS=200\n"
      "CONFIG_LEARNING_RATE=10\nCONFIG_WEIGHT_DECAY=10\nCONFIG_WARMUP_ITERS=0\n"
      "CONFIG_GRAD_CLIP=0\n");
  rakv::apps::TrainOptions options;
  options.config = cfg;
  options.out_dir = dir.path();
  options.progress = false;
  std::ostringstream log;
  std::string message;
  try {
    rakv::apps::train(options, log);
  } catch (const std::exception& e) {
    message = e.what();
  }
  const std::regex diverged(
      "training diverged at step ([0-9]+) \\((validation )?loss is -?(nan|inf)\\); lower "
      "CONFIG_LEARNING_RATE or enable CONFIG_GRAD_CLIP");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(message, match, diverged)) << message;
  const int64_t step = std::stoll(match[1]);
  EXPECT_LT(step, 200);
  if (step > 1) {
    const auto last = rakv::model::load_model(dir.file("model.safetensors"));
    EXPECT_EQ(last.step, step - 1);  // the previous step's checkpoint, finite
  }
}

// What the ops do with NaN and Inf: they propagate them (no op checks for them), and causal
// masking keeps a poisoned query or key from reaching the rows that may not see it. A poisoned
// value reaches every row, the masked ones included, because 0 x NaN = NaN.
TEST(BadInputs, AttentionPropagatesNaNAndInfAlongWhatEachRowSees) {
  torch::manual_seed(3);
  const int64_t t = 6;
  const int64_t poisoned = 2;
  auto qkv = [&] { return torch::randn({1, 1, t, 4}, torch::kFloat64); };
  auto nan_rows = [&](const torch::Tensor& out) {
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < t; ++i) {
      if (torch::isnan(out[0][0][i]).any().item<bool>())
        rows.push_back(i);
    }
    return rows;
  };
  const std::vector<int64_t> only_row = {poisoned};
  const std::vector<int64_t> from_row = {2, 3, 4, 5};
  const std::vector<int64_t> all_rows = {0, 1, 2, 3, 4, 5};

  torch::Tensor q = qkv(), k = qkv(), v = qkv();
  for (double poison : {kNaN, kInf}) {
    q[0][0][poisoned][1] = poison;
    const auto q_rows = nan_rows(rakv::ops::causal_attention(q, k, v, 0.0));
#if TORCH_VERSION_MAJOR < 2
    EXPECT_EQ(q_rows, only_row);
#else
    // LibTorch 2.11's fused CPU kernel may return the poisoned row finite; no other row is touched.
    EXPECT_TRUE(std::includes(only_row.begin(), only_row.end(), q_rows.begin(), q_rows.end()));
#endif
    EXPECT_EQ(nan_rows(rakv::ops::cached_causal_attention(q, k, v)), only_row);
  }

  q = qkv();
  k[0][0][poisoned][0] = kNaN;
  EXPECT_EQ(nan_rows(rakv::ops::causal_attention(q, k, v, 0.0)), from_row);
  EXPECT_EQ(nan_rows(rakv::ops::cached_causal_attention(q, k, v)), from_row);

  k = qkv();
  v[0][0][poisoned][3] = kNaN;
  const auto v_rows = nan_rows(rakv::ops::causal_attention(q, k, v, 0.0));
#if TORCH_VERSION_MAJOR < 2
  EXPECT_EQ(v_rows, all_rows);  // the materialised softmax times v
#else
  EXPECT_TRUE(std::includes(v_rows.begin(), v_rows.end(), from_row.begin(), from_row.end()));
#endif
  EXPECT_EQ(nan_rows(rakv::ops::cached_causal_attention(q, k, v)), all_rows);
}

TEST(BadInputs, GateOpsPropagateNaNAndInfPerHead) {
  const auto w_std = torch::tensor({0.9, 0.9, 0.9}, torch::kFloat64);
  const auto w_rec = torch::tensor({0.1, kNaN, kInf}, torch::kFloat64);
  const auto s = rakv::ops::reciprocal_gate_scale(w_std, w_rec, 3, 4, 1);
  // Head 0 finite; head 1's reciprocal dim NaN; head 2's infinite; the standard dims finite.
  EXPECT_TRUE(torch::isfinite(s[0]).all().item<bool>());
  EXPECT_TRUE(torch::isnan(s[1][3]).item<bool>());
  EXPECT_TRUE(torch::isinf(s[2][3]).item<bool>());
  EXPECT_TRUE(torch::isfinite(s.narrow(1, 0, 3)).all().item<bool>());
  // A negative gate is clamped to 1e-8 (scale 1e-4), not an error.
  const auto clamped =
      rakv::ops::reciprocal_gate_scale(torch::tensor({-1.0}), torch::tensor({0.1}), 2, 4, 1);
  EXPECT_NEAR(clamped[0][0].item<double>(), 1e-4, 1e-9);
  const auto folded =
      rakv::ops::fold_reciprocal_gates(torch::ones({36, 12}, torch::kFloat64), w_std, w_rec, 3, 1);
  EXPECT_TRUE(torch::isnan(folded[7]).all().item<bool>());  // Q row of head 1's reciprocal dim
  EXPECT_TRUE(torch::isfinite(folded.narrow(0, 12, 24)).all().item<bool>());  // K and V rows
}

// ---------------------------------------------------------------------------------------------
// Tensor shapes, dtypes and devices into each op of include/rakv/ops.h
// ---------------------------------------------------------------------------------------------

TEST(BadInputs, ReciprocalGateOpsRejectBadArguments) {
  using namespace rakv::ops;
  const auto gate = torch::ones({1});
  const auto ints = torch::ones({1}, torch::kInt64);
  expect_error_containing([&] { reciprocal_gate_scale(ints, ints, 2, 8, 2); },
                          "reciprocal gates must be floating point, got Long and Long");
  expect_error_containing(
      [&] {
        reciprocal_gate_scale(torch::ones({1, 1}), gate, 2, 8, 2);
      },
      "reciprocal gates w_std and w_rec must both be [1] or [H], got [1, 1] "
      "and [1]");
  expect_error_containing(
      [&] { reciprocal_gate_scale(torch::ones({3}), torch::ones({3}), 2, 8, 2); },
      "per-head gates have 3 entries but the layer has 2 heads");
  expect_error_containing([&] { reciprocal_gate_scale(gate, gate, 2, 8, 0); },
                          "reciprocal rank R must satisfy 0 < R < head dim, got R = 0 with head "
                          "dim 8");
  expect_error_containing([&] { reciprocal_gate_scale(gate, gate, 2, 8, 8); }, "got R = 8");

  expect_error_containing(
      [&] {
        fold_reciprocal_gates(torch::ones({16, 8}), gate, gate, 2, 1);
      },
      "fold_reciprocal_gates expects the fused projection weight [3C, C], got "
      "[16, 8]");
  expect_error_containing(
      [&] {
        fold_reciprocal_gates(torch::ones({24, 8}), gate, gate, 3, 1);
      },
      "n_embd 8 is not divisible by n_head 3");
  expect_error_containing(
      [&] {
        fold_reciprocal_gates(torch::ones({24, 8}), gate, gate, 0, 1);
      },
      "n_embd 8 is not divisible by n_head 0");
  expect_error_containing(
      [&] {
        fold_reciprocal_gates(torch::ones({24, 8}, torch::kInt64), gate, gate, 2, 1);
      },
      "fold_reciprocal_gates expects a floating-point weight, got Long");

  const auto w = torch::ones({8, 8});
  expect_error_containing(
      [&] {
        repack_reciprocal_qkv(w, torch::ones({8, 4}), w, 2, 1);
      },
      "repack expects square W_q, W_k, W_v of equal shape [C, C], got [8, 8], "
      "[8, 4], [8, 8]");
  expect_error_containing([&] { repack_reciprocal_qkv(w, w, w, 3, 1); },
                          "n_embd 8 is not divisible by n_head 3");
  expect_error_containing([&] { repack_reciprocal_qkv(w, w, w, 2, 4); },
                          "got R = 4 with head dim 4");
}

TEST(BadInputs, AttentionOpsRejectBadArguments) {
  using namespace rakv::ops;
  const auto x = torch::ones({2, 3, 8});
  expect_error_containing(
      [&] {
        split_heads(torch::ones({3, 8}), 2);
      },
      "split_heads expects [B, T, C] with C divisible by 2, got [3, 8]");
  expect_error_containing([&] { split_heads(x, 3); }, "with C divisible by 3, got [2, 3, 8]");
  // n_head 0 divided by zero (SIGFPE) and a negative one reached view() before the check.
  expect_error_containing([&] { split_heads(x, 0); }, "with C divisible by 0");
  expect_error_containing([&] { split_heads(x, -2); }, "with C divisible by -2");
  expect_error_containing([&] { merge_heads(x); },
                          "merge_heads expects [B, H, T, D], got [2, 3, 8]");

  const auto q = torch::ones({1, 2, 4, 8});
  expect_error_containing([&] { causal_attention(x, q, q, 0.0); },
                          "causal_attention expects q, k, v of shape [B, H, T, D], got [2, 3, 8], "
                          "[1, 2, 4, 8], [1, 2, 4, 8]");
  expect_error_containing(
      [&] {
        causal_attention(q, q, torch::ones({1, 2, 4, 4}), 0.0);
      },
      "causal_attention: q, k, v shapes disagree");
  expect_error_containing([&] { causal_attention(q, q, q.to(torch::kFloat64), 0.0); },
                          "causal_attention: q, k, v dtypes differ");
  const auto on_meta = torch::empty({1, 2, 4, 8}, torch::TensorOptions().device(torch::kMeta));
  expect_error_containing([&] { causal_attention(q, on_meta, q, 0.0); },
                          "causal_attention: q, k, v are on different devices");
  expect_error_containing(
      [&] {
        causal_attention(q, torch::ones({1, 2, 5, 8}), torch::ones({1, 2, 5, 8}), 0.0);
      },
      "causal_attention: q has 4 positions but k has 5");
  expect_error_containing([&] { causal_attention(q, q, q, 1.0); },
                          "dropout must be in [0, 1), got 1");
  expect_error_containing([&] { causal_attention(q, q, q, -0.1); },
                          "dropout must be in [0, 1), got -0.1");
  expect_error_containing(
      [&] {
        cached_causal_attention(q, torch::ones({1, 2, 3, 8}), torch::ones({1, 2, 3, 8}));
      },
      "cached_causal_attention: 4 queries but only 3 cached keys");
  expect_error_containing([&] { cached_causal_attention(q, q, q.to(torch::kInt32)); },
                          "cached_causal_attention: q, k, v dtypes differ");
}

// ---------------------------------------------------------------------------------------------
// The catalogue itself
// ---------------------------------------------------------------------------------------------

// Every row of the catalogue's tables (those whose header starts "| # |") cites at least one test,
// as `Suite.Name` in its last column, and each cited test exists in tests/ (TEST, TEST_F or
// TEST_P), so that a renamed or deleted test cannot leave a row pointing at nothing.
TEST(BadInputs, CatalogueNamesOnlyExistingTests) {
  std::set<std::string> tests;
  const std::regex definition(R"(TEST(_F|_P)?\(\s*(\w+),\s*(\w+)\))");
  for (const auto& entry : fs::directory_iterator(std::string(RAKV_SOURCE_DIR) + "/tests")) {
    if (entry.path().extension() != ".cpp")
      continue;
    const std::string source = rakv::io::read_file(entry.path().string());
    for (std::sregex_iterator it(source.begin(), source.end(), definition), end; it != end; ++it) {
      tests.insert((*it)[2].str() + "." + (*it)[3].str());
    }
  }
  std::istringstream doc(
      rakv::io::read_file(std::string(RAKV_SOURCE_DIR) + "/docs/reliability.md"));
  const std::regex cited(R"(`(\w+)\.(\w+)`)");
  std::string line;
  bool in_catalogue = false;
  int rows = 0;
  while (std::getline(doc, line)) {
    if (line.rfind("| # |", 0) == 0) {
      in_catalogue = true;
      continue;
    }
    if (line.empty() || line[0] != '|')
      in_catalogue = false;
    if (!in_catalogue || line.rfind("|--", 0) == 0 || line.rfind("| --", 0) == 0)
      continue;
    const std::string last_cell = line.substr(line.rfind('|', line.size() - 2));
    int citations = 0;
    for (std::sregex_iterator it(last_cell.begin(), last_cell.end(), cited), end; it != end;
         ++it, ++citations) {
      const std::string name = (*it)[1].str() + "." + (*it)[2].str();
      EXPECT_TRUE(tests.count(name)) << "docs/reliability.md cites " << name << ", no such test";
    }
    EXPECT_GT(citations, 0) << "a catalogue row cites no test: " << line;
    ++rows;
  }
  EXPECT_GE(rows, 60);
}

}  // namespace
