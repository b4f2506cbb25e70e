// `rakv audit`: re-measure the optimization audit's findings with correctness.
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "rakv/apps/audit.h"

namespace rakv::cli {
namespace {

struct AuditArgs {
  apps::AuditOptions options;
  std::string device = "cpu";
  std::string only;
  std::vector<int64_t> sizes;
  bool no_progress = false;
  std::string command_line;
};

int run_audit(AuditArgs args) {
  args.options.device = args.device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  std::stringstream only(args.only);
  for (std::string id; std::getline(only, id, ',');) {
    if (!id.empty()) args.options.only.insert(id);
  }
  args.options.sizes = args.sizes;
  args.options.progress = !args.no_progress;
  args.options.command_line = args.command_line;
  apps::run_audit(args.options, std::cerr);
  return 0;
}

}  // namespace

void add_audit_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<AuditArgs>();
  auto& o = args->options;
  CLI::App* cmd = app.add_subcommand("audit", "Re-measure the optimization audit's findings (tables, CSV, plots, correctness)");
  cmd->add_option("--out", o.out_dir, "Output directory: report.md, <finding>.csv, <finding>.png")->required();
  cmd->add_option("--device", args->device, "cpu (fp32) or cuda (fp16)")->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_flag("--quick", o.quick, "Fewer, smaller sizes (about two minutes on a 2-core CPU)");
  cmd->add_option("--only", args->only, "Comma-separated findings: gate,topk,concat,gather,importance,attention");
  cmd->add_option("--sizes", args->sizes, "Override the sequence lengths T of every finding")->delimiter(',');
  cmd->add_option("--batch", o.batch, "B")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--heads", o.heads, "H")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--head-dim", o.head_dim, "D")->capture_default_str()->check(CLI::Range(2, 1024));
  cmd->add_option("--rank", o.reciprocal_rank, "R (0 < R < D)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--repeats", o.repeats, "Timed repeats per measurement (default 5 on CPU, 20 on CUDA)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--no-progress", args->no_progress, "No progress bar");
  cmd->callback([&run, args] {
    args->command_line = invocation();
    run = [args] { return run_audit(*args); };
  });
}

}  // namespace rakv::cli
