// A one-line progress bar on stderr: `label [#####.....] step/total  <status>  eta`. On a
// terminal it redraws in place; otherwise (logs, CI) it prints a line every 10%.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace rakv::util {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::ostream& out, bool enabled = true);
  // Reports that `done` of `total` units are complete, with a free-form status (loss, tok/s).
  void update(int64_t done, const std::string& status);
  // Ends the line.
  void finish(const std::string& status);

 private:
  std::string render(int64_t done, const std::string& status) const;
  std::string label_;
  int64_t total_;
  std::ostream& out_;
  bool enabled_;
  bool interactive_;
  int64_t last_printed_decile_ = -1;
  std::chrono::steady_clock::time_point start_;
};

// "1:05" style duration.
std::string format_duration(double seconds);

}  // namespace rakv::util
