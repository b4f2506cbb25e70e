// Rendering of audit findings: CSV, markdown tables and gnuplot plots.
#include <torch/torch.h>

#include <sstream>

#include "rakv/apps/audit_findings.h"
#include "rakv/util/plot.h"

namespace rakv::apps::audit {

std::string finding_csv(const FindingResult& finding) {
  std::ostringstream out;
  for (size_t i = 0; i < finding.columns.size(); ++i) out << (i ? "," : "") << finding.columns[i];
  out << "\n";
  for (const auto& row : finding.rows) {
    for (size_t i = 0; i < row.size(); ++i) out << (i ? "," : "") << row[i];
    out << "\n";
  }
  return out.str();
}

std::string finding_markdown(const FindingResult& finding, const std::string& plot_file) {
  std::ostringstream out;
  out << "## " << finding.title << "\n\n";
  out << "> Audit: " << finding.audit_claim << "\n\n";
  out << "|";
  for (const auto& column : finding.columns) out << " " << column << " |";
  out << "\n|";
  for (size_t i = 0; i < finding.columns.size(); ++i) out << "---|";
  out << "\n";
  for (const auto& row : finding.rows) {
    out << "|";
    for (const auto& cell : row) out << " " << cell << " |";
    out << "\n";
  }
  out << "\n";
  for (const auto& note : finding.notes) out << "- " << note << "\n";
  if (!finding.notes.empty()) out << "\n";
  for (const auto& failure : finding.failures) out << "- **CORRECTNESS FAILURE**: " << failure << "\n";
  if (!finding.failures.empty()) out << "\n";
  out << "**Verdict: " << finding.verdict << "**\n\n";
  if (!plot_file.empty()) out << "![" << finding.id << "](" << plot_file << ")\n\n";
  return out.str();
}

void write_plot(const FindingResult& finding, const std::string& png_path) {
  std::vector<util::PlotSeries> series;
  for (const auto& [variant, points] : finding.series) {
    util::PlotSeries line{variant, {}};
    for (const auto& [t, ms] : points) line.points.emplace_back(static_cast<double>(t), ms);
    series.push_back(std::move(line));
  }
  if (series.empty()) return;
  util::plot_png(png_path, {finding.title, "sequence length T", "median time (ms)", true, true}, series);
}

}  // namespace rakv::apps::audit
