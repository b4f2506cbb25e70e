// `rakv topk`: the KV top-k selection methods against torch::topk on random importance rows.
#include <iomanip>
#include <iostream>
#include <memory>

#include "commands.h"
#include "rakv/apps/topk_bench.h"
#include "rakv/io/atomic_file.h"

namespace rakv::cli {
namespace {

struct TopkArgs {
  apps::TopkBenchOptions options;
  std::vector<std::string> methods;
  std::string csv;
  std::string device = "cpu";
};

int run_topk(TopkArgs args) {
  if (!args.methods.empty()) {
    args.options.methods.clear();
    for (const auto& name : args.methods) args.options.methods.push_back(ops::parse_topk_method(name));
  }
  if (args.device == "cuda") args.options.device = torch::kCUDA;
  const auto rows = apps::run_topk_benchmark(args.options);
  std::string csv = std::string(apps::kTopkCsvHeader) + "\n";
  std::cout << std::left << std::setw(16) << "method" << std::setw(12) << "returned_k" << std::setw(10) << "recall"
            << std::setw(12) << "median_ms" << "vs torch::topk (" << rows.front().torch_topk_ms << " ms, k = "
            << rows.front().k << ")\n";
  for (const auto& row : rows) {
    csv += apps::topk_csv_row(row) + "\n";
    std::cout << std::left << std::setw(16) << row.method << std::setw(12) << row.returned_k << std::setw(10)
              << row.recall << std::setw(12) << row.median_ms << row.torch_topk_ms / row.median_ms << "x\n";
  }
  if (!args.csv.empty()) io::write_file_atomically(args.csv, csv);
  return 0;
}

}  // namespace

void add_topk_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<TopkArgs>();
  auto& o = args->options;
  CLI::App* cmd = app.add_subcommand("topk", "Time KV top-k selection methods against torch::topk on random rows");
  cmd->add_option("--T", o.seq_len, "Sequence length (row length)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o.batch, "Batch size B")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--heads", o.heads, "Heads H")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--keep-ratio", o.keep_ratio, "k = min(T, max(k_min, floor(T * ratio)))")
      ->capture_default_str()
      ->check(CLI::Range(1e-9, 1.0));
  cmd->add_option("--k-min", o.k_min, "k_min")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--recency", o.recency, "Recency window always kept")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--sample-fraction", o.sample_fraction, "Sample fraction of the sampling methods")
      ->capture_default_str()
      ->check(CLI::Range(1e-9, 1.0));
  cmd->add_option("--method", args->methods, "exact, sampling or audit_sampling (repeatable; default: all)");
  cmd->add_option("--repeats", o.repeats, "Timed repeats (median)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o.seed, "Seed of the random importance and the samplers")->capture_default_str();
  cmd->add_option("--device", args->device, "cpu or cuda")->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--csv", args->csv, "Write " + std::string(apps::kTopkCsvHeader) + " rows to this file");
  cmd->callback([&run, args] { run = [args] { return run_topk(*args); }; });
}

}  // namespace rakv::cli
