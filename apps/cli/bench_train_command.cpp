// `rakv bench-train`: training tokens/s and MFU of a configuration after warm-up.
#include <iostream>
#include <memory>

#include "commands.h"
#include "rakv/apps/bench_train.h"

namespace rakv::cli {
namespace {

struct BenchTrainArgs {
  apps::BenchTrainOptions options;
  std::string config_file;
  std::vector<std::string> sets;
};

int run_bench_train(BenchTrainArgs args) {
  args.options.config =
      args.config_file.empty() ? config::Config() : config::Config::parse_file(args.config_file);
  for (const auto& assignment : args.sets)
    args.options.config.apply_assignment(assignment);
  apps::bench_train(args.options, std::cout);
  return 0;
}

}  // namespace

void add_bench_train_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<BenchTrainArgs>();
  CLI::App* cmd = app.add_subcommand("bench-train",
                                     "Training tokens/s and MFU of a configuration after warm-up");
  cmd->add_option("--config", args->config_file, ".config file (default: embedded defaults)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--set", args->sets, "Override an option: --set CONFIG_X=value (repeatable)");
  cmd->add_option("--steps", args->options.steps, "Timed steps")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", args->options.warmup, "Untimed warm-up steps")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option(
      "--export", args->options.export_dir,
      "Write init.safetensors, batches.safetensors and rakv_losses.csv for the PyTorch reference");
  cmd->add_option("--json", args->options.json_path, "Write the result as JSON");
  cmd->add_flag("--profile", args->options.profile,
                "Profile the timed steps (CUDA): the kernels with the most device time per step");
  cmd->add_option("--profile-trace", args->options.profile_trace,
                  "With the profile, write a Chrome trace (chrome://tracing, Perfetto) to FILE");
  cmd->callback([&run, args] { run = [args] { return run_bench_train(*args); }; });
}

}  // namespace rakv::cli
