// rakv: Reciprocal Attention, R-MLP, KV pruning and KVSplice on LibTorch.
#include <unistd.h>

#include <iostream>

#include "commands.h"
#include "rakv/util/runtime.h"

namespace rakv::cli {
std::string& invocation() {
  static std::string text;
  return text;
}
}  // namespace rakv::cli

int main(int argc, char** argv) {
  rakv::cli::invocation() = "rakv";
  for (int i = 1; i < argc; ++i) rakv::cli::invocation() += std::string(" ") + argv[i];
  CLI::App app{"rakv " RAKV_VERSION
               ": Reciprocal Attention, R-MLP, KV-cache pruning and KVSplice on LibTorch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "rakv " RAKV_VERSION);
  rakv::cli::Action run;
  rakv::cli::add_run_command(app, run);
  rakv::cli::add_train_command(app, run);
  rakv::cli::add_generate_command(app, run);
  rakv::cli::add_config_command(app, run);
  rakv::cli::add_topk_command(app, run);
  rakv::cli::add_audit_command(app, run);
  rakv::cli::add_calibrate_command(app, run);
  rakv::cli::add_eval_command(app, run);
  rakv::cli::add_bench_train_command(app, run);
  // CLI11 reports a misspelt subcommand only as "a subcommand is required": name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known = known || sub->check_name(argv[1]);
    if (!known) {
      std::cerr << "rakv: error: unknown subcommand '" << argv[1] << "' (see rakv --help)\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "rakv: error: " << e.what() << " (see rakv --help)\n";
    return 2;
  }
  try {
    rakv::util::configure_threads();
    return run();
  } catch (const std::exception& e) {
    // On a terminal the progress bar may own the current line: start a fresh one.
    std::cerr << (::isatty(STDERR_FILENO) ? "\n" : "") << "rakv: error: "
              << rakv::util::one_line_message(e) << "\n";
    return 1;
  }
}
