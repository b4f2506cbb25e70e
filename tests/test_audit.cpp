// `rakv audit` end to end on tiny sizes: every file is produced, CSV headers are the documented
// ones, and a correctness failure (the audit's own sampling count) is flagged, not hidden.
#include "rakv/apps/audit.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "rakv/io/atomic_file.h"
#include "test_helpers.h"

namespace {

rakv::apps::AuditOptions tiny_audit(const std::string& out) {
  rakv::apps::AuditOptions options;
  options.out_dir = out;
  options.quick = true;
  options.sizes = {256, 512};
  options.batch = 1;
  options.heads = 2;
  options.head_dim = 16;
  options.reciprocal_rank = 2;
  options.repeats = 1;
  options.progress = false;
  options.command_line = "test";
  return options;
}

TEST(Audit, QuickRunProducesEveryFileWithStableHeaders) {
  rakv::testing::TempDir dir;
  std::ostringstream log;
  const auto summary = rakv::apps::run_audit(tiny_audit(dir.path()), log);
  EXPECT_EQ(summary.files.size(), 1u + 2u * rakv::apps::audit_csv_headers().size());
  for (const auto& [id, header] : rakv::apps::audit_csv_headers()) {
    SCOPED_TRACE(id);
    const std::string csv = rakv::io::read_file(dir.file(id + ".csv"));
    EXPECT_EQ(csv.substr(0, csv.find('\n')), header);
    EXPECT_GT(std::count(csv.begin(), csv.end(), '\n'), 2);
    EXPECT_GT(std::filesystem::file_size(dir.file(id + ".png")), 1000u);
  }
  const std::string report = rakv::io::read_file(dir.file("report.md"));
  for (const char* finding : {"1. Gate scaling", "2. KV pruning top-k", "3. Concatenation", "4. Gather",
                              "5. Importance", "6. RA attention"}) {
    EXPECT_NE(report.find(finding), std::string::npos) << finding;
  }
  // One verdict per finding.
  size_t verdicts = 0;
  for (size_t at = report.find("**Verdict: "); at != std::string::npos; at = report.find("**Verdict: ", at + 1)) ++verdicts;
  EXPECT_EQ(verdicts, 6u);
}

TEST(Audit, FlagsTheAuditSamplingCountAsACorrectnessFailure) {
  rakv::testing::TempDir dir;
  auto options = tiny_audit(dir.path());
  options.only = {"topk"};
  std::ostringstream log;
  const auto summary = rakv::apps::run_audit(options, log);
  EXPECT_GE(summary.correctness_failures, 2);  // one per size
  const std::string report = rakv::io::read_file(dir.file("report.md"));
  EXPECT_NE(report.find("**CORRECTNESS FAILURE**: audit_sampling at T=512 returned"), std::string::npos) << report;
  EXPECT_NE(report.find("### Correctness failures"), std::string::npos);
  const std::string csv = rakv::io::read_file(dir.file("topk.csv"));
  EXPECT_NE(csv.find(",audit_sampling,"), std::string::npos);
  EXPECT_NE(csv.find(",NO\n"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("gate.csv")));
}

TEST(Audit, RejectsUnknownFindings) {
  rakv::testing::TempDir dir;
  auto options = tiny_audit(dir.file("out"));
  options.only = {"gates"};
  std::ostringstream log;
  rakv::testing::expect_error_containing([&] { rakv::apps::run_audit(options, log); }, "unknown finding 'gates'");
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));
}

}  // namespace
