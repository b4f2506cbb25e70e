// Subcommands of the `rakv` CLI. Each add_*_command registers its options on `app` and sets
// `run` to the action, executed after the whole command line parsed.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace rakv::cli {

using Action = std::function<int()>;

// The command line as typed (`rakv audit --quick ...`), for reports that record how they were made.
std::string& invocation();

void add_train_command(CLI::App& app, Action& run);
void add_run_command(CLI::App& app, Action& run);
void add_generate_command(CLI::App& app, Action& run);
void add_config_command(CLI::App& app, Action& run);
void add_topk_command(CLI::App& app, Action& run);
void add_audit_command(CLI::App& app, Action& run);
void add_calibrate_command(CLI::App& app, Action& run);
void add_eval_command(CLI::App& app, Action& run);
void add_bench_train_command(CLI::App& app, Action& run);

}  // namespace rakv::cli
