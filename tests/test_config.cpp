// Configuration parsing: valid files, every kind of bad line, defconfigs and the Kconfig file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "rakv/config.h"
#include "rakv/io/atomic_file.h"
#include "rakv/model/gpt2.h"

namespace {

using rakv::config::Config;
using rakv::config::ConfigError;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsAreTheEmbeddedTinyRaRmlpJob) {
  const Config cfg;
  EXPECT_TRUE(cfg.get_bool("CONFIG_RA"));
  EXPECT_TRUE(cfg.get_bool("CONFIG_RMLP"));
  EXPECT_EQ(cfg.get_string("CONFIG_DEVICE"), "cpu");
  EXPECT_EQ(cfg.get_string("CONFIG_RA_GATE_SCALING"), "fused");
}

TEST(Config, ParsesKconfigSyntax) {
  const Config cfg = Config::parse_text(
      "# comment\n\nCONFIG_N_LAYER=6\n# CONFIG_RA is not set\nCONFIG_LEARNING_RATE=\"1e-3\"\n"
      "CONFIG_RA_GATE_SCALING=split_cat\nCONFIG_SAMPLE_PROMPT=\"say \\\"hi\\\"\"\n",
      "test");
  EXPECT_EQ(cfg.get_int("CONFIG_N_LAYER"), 6);
  EXPECT_FALSE(cfg.get_bool("CONFIG_RA"));
  EXPECT_DOUBLE_EQ(cfg.get_float("CONFIG_LEARNING_RATE"), 1e-3);
  EXPECT_EQ(cfg.get_string("CONFIG_RA_GATE_SCALING"), "split_cat");
  EXPECT_EQ(cfg.get_string("CONFIG_SAMPLE_PROMPT"), "say \"hi\"");
}

TEST(Config, TextRoundTrips) {
  Config cfg;
  cfg.set("CONFIG_N_HEAD", "8");
  cfg.set("CONFIG_SAMPLE_PROMPT", "a \"quoted\" \\ prompt");
  cfg.set("CONFIG_RA", "n");
  EXPECT_EQ(Config::parse_text(cfg.to_text(), "round-trip"), cfg);
  EXPECT_EQ(Config::parse_text(cfg.to_minimal_text(), "minimal"), cfg);
}

TEST(Config, RejectsUnknownOptionWithItsName) {
  const std::string message = error_of([] { Config::parse_text("CONFIG_N_LAYERS=4\n", "my.config"); });
  EXPECT_NE(message.find("my.config:1"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown option CONFIG_N_LAYERS"), std::string::npos) << message;
}

TEST(Config, RejectsMalformedLines) {
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_N_LAYER 4\n", "f"); }).find("f:1: expected CONFIG_NAME=value"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("\nN_LAYER=4\n", "f"); }).find("f:2"), std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_N_LAYER=four\n", "f"); }).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_N_LAYER=4x\n", "f"); }).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_RA=yes\n", "f"); }).find("must be y or n"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_LEARNING_RATE=fast\n", "f"); }).find("finite number"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_LEARNING_RATE=nan\n", "f"); }).find("finite number"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_RA_GATE_SCALING=fast\n", "f"); }).find("split_cat|scale_tensor|fused"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_N_LAYER=0\n", "f"); }).find("must be in [1, 128]"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_N_LAYER=2\nCONFIG_N_LAYER=3\n", "f"); }).find("set twice"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("# CONFIG_N_LAYER is not set\n", "f"); }).find("not a bool"),
            std::string::npos);
  EXPECT_NE(error_of([] { Config::parse_text("CONFIG_SAMPLE_PROMPT=\"open\n", "f"); }).find("unterminated"),
            std::string::npos);
}

TEST(Config, SetAssignmentsValidateLikeTheParser) {
  Config cfg;
  cfg.apply_assignment("CONFIG_N_EMBD=64");
  EXPECT_EQ(cfg.get_int("CONFIG_N_EMBD"), 64);
  EXPECT_NE(error_of([&] { cfg.apply_assignment("N_EMBD=64"); }).find("--set"), std::string::npos);
  EXPECT_NE(error_of([&] { cfg.apply_assignment("CONFIG_NOPE=1"); }).find("unknown option"), std::string::npos);
}

TEST(Config, ModelValidationNamesTheOptions) {
  Config cfg;
  cfg.set("CONFIG_N_EMBD", "130");
  EXPECT_NE(error_of([&] { rakv::model::gpt2_config_from(cfg); })
                .find("CONFIG_N_EMBD (130) must be divisible by CONFIG_N_HEAD (4)"),
            std::string::npos);
  cfg.set("CONFIG_N_EMBD", "128");
  cfg.set("CONFIG_RA_R", "32");
  EXPECT_NE(error_of([&] { rakv::model::gpt2_config_from(cfg); }).find("CONFIG_RA_R (32) must be less than the head dimension 32"),
            std::string::npos);
  cfg.set("CONFIG_RA_R", "4");
  cfg.set("CONFIG_RA_LAYERS", "0,7");
  EXPECT_NE(error_of([&] { rakv::model::gpt2_config_from(cfg); }).find("lists layer 7"), std::string::npos);
  cfg.set("CONFIG_RA_LAYERS", "0,x");
  EXPECT_NE(error_of([&] { rakv::model::gpt2_config_from(cfg); }).find("CONFIG_RA_LAYERS"), std::string::npos);
}

TEST(Config, LayerLists) {
  EXPECT_EQ(rakv::config::parse_layer_list("all", 3, "X"), (std::vector<bool>{true, true, true}));
  EXPECT_EQ(rakv::config::parse_layer_list("none", 3, "X"), (std::vector<bool>{false, false, false}));
  EXPECT_EQ(rakv::config::parse_layer_list(" 0, 2", 3, "X"), (std::vector<bool>{true, false, true}));
}

TEST(Config, KconfigFileMatchesTheOptionTable) {
  const std::string committed = rakv::io::read_file(std::string(RAKV_SOURCE_DIR) + "/Kconfig");
  EXPECT_EQ(committed, rakv::config::generate_kconfig())
      << "Kconfig is stale: regenerate it with `build/rakv config --kconfig > Kconfig`";
}

TEST(Config, EveryDefconfigParsesAndBuildsAModelConfig) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(RAKV_SOURCE_DIR) + "/configs/defconfigs")) {
    SCOPED_TRACE(entry.path().string());
    const Config cfg = Config::parse_file(entry.path().string());
    EXPECT_NO_THROW(rakv::model::gpt2_config_from(cfg));
    ++count;
  }
  EXPECT_GE(count, 4);
}

// The Kconfig tools must accept our Kconfig and leave each defconfig's values unchanged.
TEST(Config, KconfigToolsAcceptDefconfigs) {
  if (std::system("command -v kconfig-conf > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "kconfig-conf is not installed (scripts/setup.sh installs it)";
  }
  const auto dir = std::filesystem::temp_directory_path() / ("rakv-kconfig-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const auto& entry : std::filesystem::directory_iterator(std::string(RAKV_SOURCE_DIR) + "/configs/defconfigs")) {
    SCOPED_TRACE(entry.path().string());
    const auto out = dir / "config";
    std::filesystem::copy_file(entry.path(), out, std::filesystem::copy_options::overwrite_existing);
    const std::string command = "cd '" + dir.string() + "' && KCONFIG_CONFIG='" + out.string() +
                                "' kconfig-conf --olddefconfig '" + RAKV_SOURCE_DIR + "/Kconfig' > /dev/null 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0);
    EXPECT_EQ(Config::parse_file(out.string()), Config::parse_file(entry.path().string()));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
