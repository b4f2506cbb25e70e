// `rakv audit`: runs the findings, then writes the report, the CSVs and the plots.
#include <torch/torch.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "rakv/apps/audit.h"
#include "rakv/apps/audit_findings.h"
#include "rakv/io/atomic_file.h"
#include "rakv/util/progress.h"
#include "rakv/util/system_info.h"

namespace rakv::apps {
namespace fs = std::filesystem;

const std::vector<std::pair<std::string, std::string>>& audit_csv_headers() {
  static const std::vector<std::pair<std::string, std::string>> headers = {
      {"gate", "T,variant,median_ms,speedup_vs_split_cat,max_rel_diff,attention_share,correct"},
      {"topk", "T,k,variant,median_ms,speedup_vs_torch_topk,returned_k,recall,correct"},
      {"concat", "T,variant,median_ms,speedup_vs_cat,correct"},
      {"gather", "T,k,variant,median_ms,gb_per_s,correct"},
      {"importance", "T,variant,median_ms,peak_mib,max_rel_diff,status"},
      {"attention", "T,variant,median_ms,overhead_vs_plain,max_rel_diff,correct"},
  };
  return headers;
}

namespace {

using Measure = FindingResult (*)(const AuditOptions&, const std::vector<int64_t>&,
                                  const audit::Tick&);

Measure measure_for(const std::string& id) {
  if (id == "gate")
    return audit::measure_gate_scaling;
  if (id == "topk")
    return audit::measure_topk;
  if (id == "concat")
    return audit::measure_concat;
  if (id == "gather")
    return audit::measure_gather;
  if (id == "importance")
    return audit::measure_importance;
  return audit::measure_attention;
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return buffer;
}

}  // namespace

AuditSummary run_audit(const AuditOptions& options, std::ostream& log) {
  if (options.out_dir.empty())
    throw std::runtime_error("audit: an output directory is required (--out)");
  for (const auto& id : options.only) {
    bool known = false;
    for (const auto& [name, header] : audit_csv_headers())
      known = known || name == id;
    if (!known) {
      throw std::runtime_error(
          "audit: unknown finding '" + id +
          "' in --only (expected gate, topk, concat, gather, importance, attention)");
    }
  }
  for (int64_t t : options.sizes) {
    if (t < 1)
      throw std::runtime_error("audit: sizes must be >= 1, got " + std::to_string(t));
  }
  if (options.device.is_cuda() && !torch::cuda::is_available()) {
    throw std::runtime_error(
        "audit: --device cuda but no CUDA device is usable (build with -DRAKV_CUDA=ON on a GPU "
        "machine)");
  }
  std::vector<audit::FindingPlan> plans;
  int64_t cells = 0;
  for (const auto& plan : audit::plan_findings(options)) {
    if (!options.only.empty() && !options.only.count(plan.id))
      continue;
    plans.push_back(plan);
    cells += static_cast<int64_t>(plan.sizes.size());
  }
  fs::create_directories(options.out_dir);

  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  util::ProgressBar progress("audit", cells, std::cerr, options.progress);
  int64_t done = 0;
  const audit::Tick tick = [&](const std::string& cell) { progress.update(done++, cell); };
  const auto start = std::chrono::steady_clock::now();

  std::ostringstream report;
  report << "# rakv audit (" << (options.device.is_cuda() ? "CUDA, fp16" : "CPU, fp32") << ")\n\n"
         << "Re-measurement of `ra-optimization-audit.md` with B=" << options.batch
         << ", H=" << options.heads << ", D=" << options.head_dim
         << ", R=" << options.reciprocal_rank << ". Each time is the median of "
         << "repeated runs after a warm-up, on random inputs; every variant's correctness is "
            "checked.\n\n"
         << "- date: " << today() << "\n- command: `" << options.command_line << "`\n"
         << util::describe_machine(options.device) << "\n";
  AuditSummary summary;
  std::ostringstream verdicts;
  std::ostringstream failures;
  for (const auto& plan : plans) {
    FindingResult finding = measure_for(plan.id)(options, plan.sizes, tick);
    const std::string csv_path = (fs::path(options.out_dir) / (plan.id + ".csv")).string();
    const std::string png_name = plan.id + ".png";
    io::write_file_atomically(csv_path, audit::finding_csv(finding));
    summary.files.push_back(csv_path);
    std::string plot = png_name;
    try {
      audit::write_plot(finding, (fs::path(options.out_dir) / png_name).string());
      summary.files.push_back((fs::path(options.out_dir) / png_name).string());
    } catch (const std::exception& e) {
      // The measurements stand without their picture (e.g. a GPU machine without gnuplot).
      log << "warning: " << e.what() << "\n";
      finding.notes.push_back(std::string("plot not drawn: ") + e.what());
      plot.clear();
    }
    report << audit::finding_markdown(finding, plot);
    verdicts << "- **" << finding.title << "**: " << finding.verdict << "\n";
    for (const auto& failure : finding.failures)
      failures << "- " << finding.title << ": " << failure << "\n";
    summary.correctness_failures += static_cast<int>(finding.failures.size());
  }
  progress.finish(std::to_string(plans.size()) + " findings");
  std::ostringstream summary_text;
  summary_text << "## Summary\n\n" << verdicts.str() << "\n";
  if (summary.correctness_failures > 0) {
    summary_text << "### Correctness failures (" << summary.correctness_failures << ")\n\n"
                 << failures.str() << "\n";
  }
  const std::string report_text = report.str() + summary_text.str();
  const std::string report_path = (fs::path(options.out_dir) / "report.md").string();
  io::write_file_atomically(report_path, report_text);
  summary.files.insert(summary.files.begin(), report_path);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log << summary_text.str() << "wrote " << report_path << " and " << summary.files.size() - 1
      << " CSV/PNG files in " << util::format_duration(seconds) << "\n";
  return summary;
}

}  // namespace rakv::apps
