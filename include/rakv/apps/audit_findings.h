// The measurements behind `rakv audit`, one function per finding (apps/audit_findings.cpp).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "rakv/apps/audit.h"

namespace rakv::apps::audit {

// Called once per measured (finding, T) cell, for the progress bar.
using Tick = std::function<void(const std::string& cell)>;

struct FindingPlan {
  std::string id;
  std::vector<int64_t> sizes;
};

// The T values each finding measures for these options (device, quick, overrides).
std::vector<FindingPlan> plan_findings(const AuditOptions& options);

FindingResult measure_gate_scaling(const AuditOptions& options, const std::vector<int64_t>& sizes,
                                   const Tick& tick);
FindingResult measure_topk(const AuditOptions& options, const std::vector<int64_t>& sizes,
                           const Tick& tick);
FindingResult measure_concat(const AuditOptions& options, const std::vector<int64_t>& sizes,
                             const Tick& tick);
FindingResult measure_gather(const AuditOptions& options, const std::vector<int64_t>& sizes,
                             const Tick& tick);
FindingResult measure_importance(const AuditOptions& options, const std::vector<int64_t>& sizes,
                                 const Tick& tick);
FindingResult measure_attention(const AuditOptions& options, const std::vector<int64_t>& sizes,
                                const Tick& tick);

// Report pieces (apps/audit_report.cpp).
std::string finding_csv(const FindingResult& finding);
std::string finding_markdown(const FindingResult& finding, const std::string& plot_file);
// Renders the finding's series with gnuplot into `png_path`; throws when gnuplot fails.
void write_plot(const FindingResult& finding, const std::string& png_path);

}  // namespace rakv::apps::audit
