// The rakv CLI: help for every subcommand, and bad input giving one readable error line and a
// non-zero exit, without leaving partial output behind.
#include <filesystem>

#include "rakv/io/atomic_file.h"
#include "test_helpers.h"

namespace {

using rakv::testing::expect_clean_failure;
using rakv::testing::run_cli;
using rakv::testing::TempDir;

TEST(Cli, HelpListsEverySubcommand) {
  const auto help = run_cli("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"run", "train", "generate", "config"}) {
    EXPECT_NE(help.out.find(command), std::string::npos) << command;
    const auto sub = run_cli(std::string(command) + " --help");
    EXPECT_EQ(sub.exit_code, 0) << command;
    EXPECT_NE(sub.out.find("Usage"), std::string::npos) << command;
  }
}

TEST(Cli, UnknownSubcommandOrFlagIsAUsageError) {
  expect_clean_failure(run_cli("frobnicate"), "frobnicate");
  expect_clean_failure(run_cli("train --out x --bogus"), "bogus");
  expect_clean_failure(run_cli("train"), "--out is required");
}

TEST(Cli, BadModelOptionsFailBeforeWritingAnything) {
  TempDir dir;
  const std::string out = dir.file("run");
  expect_clean_failure(run_cli("train --no-progress --out '" + out + "' --set CONFIG_RA_R=32"),
                       "CONFIG_RA_R (32) must be less than the head dimension 32");
  expect_clean_failure(run_cli("train --no-progress --out '" + out + "' --set CONFIG_N_EMBD=130"),
                       "must be divisible by CONFIG_N_HEAD");
  expect_clean_failure(run_cli("train --no-progress --out '" + out + "' --set CONFIG_RMLP_R_FF=512"),
                       "CONFIG_RMLP_R_FF (512) must be less than the MLP width 512");
  expect_clean_failure(run_cli("train --no-progress --out '" + out + "' --set CONFIG_NOPE=1"),
                       "unknown option CONFIG_NOPE");
  expect_clean_failure(run_cli("train --no-progress --out '" + out + "' --set CONFIG_N_LAYER=two"),
                       "must be an integer");
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(Cli, UnknownOrMalformedConfigLinesNameTheFileAndLine) {
  TempDir dir;
  rakv::io::write_file_atomically(dir.file("bad.config"), "CONFIG_N_LAYER=2\nCONFIG_WHAT=1\n");
  expect_clean_failure(run_cli("train --out '" + dir.file("run") + "' --config '" + dir.file("bad.config") + "'"),
                       "bad.config:2: unknown option CONFIG_WHAT");
  rakv::io::write_file_atomically(dir.file("bad2.config"), "CONFIG_N_LAYER 2\n");
  expect_clean_failure(run_cli("config --check '" + dir.file("bad2.config") + "'"),
                       "bad2.config:1: expected CONFIG_NAME=value");
  EXPECT_FALSE(std::filesystem::exists(dir.file("run")));
}

TEST(Cli, MissingOrTruncatedCheckpoint) {
  TempDir dir;
  expect_clean_failure(run_cli("generate --checkpoint '" + dir.file("missing.safetensors") + "'"), "cannot open");
  rakv::io::write_file_atomically(dir.file("short.safetensors"), std::string("\x10\0\0", 3));
  expect_clean_failure(run_cli("generate --checkpoint '" + dir.file("short.safetensors") + "'"),
                       "not a valid safetensors file");
  expect_clean_failure(run_cli("train --resume --out '" + dir.path() + "'"), "no training checkpoint");
}

TEST(Cli, TrainThenGenerate) {
  TempDir dir;
  const std::string out = dir.file("run");
  const auto trained = run_cli(
      "train --no-progress --out '" + out +
      "' --set CONFIG_N_LAYER=1 --set CONFIG_N_EMBD=32 --set CONFIG_RMLP_R_FF=16 --set CONFIG_BLOCK_SIZE=32 "
      "--set CONFIG_BATCH_SIZE=4 --set CONFIG_MAX_ITERS=3 --set CONFIG_EVAL_ITERS=1");
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const auto generated = run_cli("generate --checkpoint '" + out + "/model.safetensors' --prompt 'Hello' --tokens 40");
  ASSERT_EQ(generated.exit_code, 0) << generated.err;
  EXPECT_EQ(generated.out.rfind("Hello", 0), 0u);
  EXPECT_EQ(generated.out.size(), 5u + 40u + 1u);  // prompt, 40 bytes, newline
  EXPECT_NE(generated.err.find("KV cache"), std::string::npos);
  // A pruned cache: the budget reaches the cache (the flag was documented but not registered).
  const auto pruned = run_cli("generate --checkpoint '" + out +
                              "/model.safetensors' --prompt 'Hello' --tokens 40 --kv-budget 0.5");
  ASSERT_EQ(pruned.exit_code, 0) << pruned.err;
  EXPECT_EQ(pruned.out.size(), 5u + 40u + 1u);
  EXPECT_NE(pruned.err.find("budget 0.5"), std::string::npos) << pruned.err;
  expect_clean_failure(
      run_cli("generate --checkpoint '" + out + "/model.safetensors' --tokens 4 --kv-budget 1.5"),
      "KV budget (keep ratio) must be in (0, 1]");
}

TEST(Cli, ConfigPrintsKconfigAndOptions) {
  const auto kconfig = run_cli("config --kconfig");
  EXPECT_EQ(kconfig.exit_code, 0);
  EXPECT_NE(kconfig.out.find("config RA_GATE_SCALING"), std::string::npos);
  const auto list = run_cli("config --list");
  EXPECT_NE(list.out.find("CONFIG_RMLP_TIED"), std::string::npos);
}

}  // namespace
