// `rakv audit`: re-measures the four findings of the optimization audit
// (../shared/spec/ra-optimization-audit.md) plus importance and RA-vs-plain attention, with the
// correctness of every variant next to its speed, and writes
//   DIR/report.md            one table per finding in the audit's layout, a verdict line each
//   DIR/<finding>.csv        gate, topk, concat, gather, importance, attention
//   DIR/<finding>.png        time vs T (log scale), one line per variant
#pragma once

#include <torch/types.h>

#include <map>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace rakv::apps {

struct AuditOptions {
  torch::Device device = torch::kCPU;
  bool quick = false;          // fewer and smaller sizes (CPU: about two minutes)
  std::set<std::string> only;  // empty: every finding
  std::string out_dir;
  std::vector<int64_t> sizes;  // overrides the T list of every finding when non-empty
  int64_t batch = 8;           // the audit's shapes: B=8, H=12, D=64, R=4
  int64_t heads = 12;
  int64_t head_dim = 64;
  int64_t reciprocal_rank = 4;
  int repeats = 0;  // 0: 5 on CPU, 20 on CUDA
  bool progress = true;
  std::string command_line;  // recorded in the report header
};

// The findings in report order, with the CSV header of each (stable; documented in README).
const std::vector<std::pair<std::string, std::string>>& audit_csv_headers();

// One finding's results: a table (also its CSV), series for its plot, failures and a verdict.
struct FindingResult {
  std::string id;
  std::string title;
  std::string audit_claim;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::map<std::string, std::vector<std::pair<int64_t, double>>> series;  // variant -> (T, ms)
  std::vector<std::string> failures;  // correctness failures, flagged in the report
  std::vector<std::string> notes;
  std::string verdict;
};

struct AuditSummary {
  std::vector<std::string> files;
  int correctness_failures = 0;
};

// Runs the selected findings and writes the files. Throws for bad options before writing.
AuditSummary run_audit(const AuditOptions& options, std::ostream& log);

}  // namespace rakv::apps
