// `rakv train` and `rakv run` (the default job: train the embedded tiny RA + R-MLP model on the
// packaged text, then print a sample).
#include <iostream>
#include <memory>

#include "commands.h"
#include "rakv/apps/train.h"
#include "validators.h"

namespace rakv::cli {
namespace {

struct TrainArgs {
  std::string config_file;
  std::vector<std::string> sets;
  std::string out_dir;
  bool resume = false;
  int64_t stop_after = 0;
  bool no_progress = false;
  bool sample = false;
};

config::Config resolve_config(const TrainArgs& args) {
  config::Config cfg = args.config_file.empty() ? config::Config()
                                                : config::Config::parse_file(args.config_file);
  for (const auto& assignment : args.sets) cfg.apply_assignment(assignment);
  return cfg;
}

int run_training(const TrainArgs& args) {
  apps::TrainOptions options;
  if (args.resume && !args.config_file.empty()) {
    throw std::runtime_error("--resume takes the configuration from the checkpoint; change options with --set");
  }
  options.config = resolve_config(args);
  options.out_dir = args.out_dir;
  options.resume = args.resume;
  options.config_overrides = args.sets;
  if (args.stop_after > 0) options.stop_after = args.stop_after;
  options.progress = !args.no_progress;
  options.sample = args.sample;
  const apps::TrainResult result = apps::train(options, std::cerr);
  if (args.sample) std::cout << "\n--- sample ---\n" << result.sample_text << "\n--------------\n";
  return 0;
}

void add_common_options(CLI::App* cmd, TrainArgs& args) {
  cmd->add_option("--set", args.sets, "Override an option: --set CONFIG_X=value (repeatable)");
  cmd->add_flag("--no-progress", args.no_progress, "No progress bar");
}

}  // namespace

void add_train_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train a GPT-2 (plain / RA / R-MLP) from a .config");
  cmd->add_option("--config", args->config_file, "Kconfig-style .config file (default: embedded defaults)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", args->out_dir, "Output directory: log.csv, model.safetensors, checkpoint.safetensors, config")
      ->required();
  add_common_options(cmd, *args);
  cmd->add_flag("--resume", args->resume, "Continue from OUT/checkpoint.safetensors");
  cmd->add_option("--stop-after", args->stop_after,
                  "Stop after this many steps in total (the schedule still runs to CONFIG_MAX_ITERS)")
      ->check(kPositive);
  cmd->add_flag("--sample", args->sample, "Print a generated sample after training");
  cmd->callback([&run, args] { run = [args] { return run_training(*args); }; });
}

void add_run_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<TrainArgs>();
  args->out_dir = "runs/default";
  args->sample = true;
  CLI::App* cmd = app.add_subcommand(
      "run", "The default job: train the embedded tiny RA + R-MLP GPT-2 on the packaged text, then sample");
  cmd->add_option("--config", args->config_file, "Kconfig-style .config file (default: embedded defaults)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", args->out_dir, "Output directory")->capture_default_str();
  add_common_options(cmd, *args);
  cmd->callback([&run, args] { run = [args] { return run_training(*args); }; });
}

}  // namespace rakv::cli
