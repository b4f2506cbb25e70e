// Terminal progress bar.
#include "rakv/util/progress.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <sstream>

namespace rakv::util {

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(seconds + 0.5);
  std::ostringstream out;
  if (total >= 3600)
    out << total / 3600 << ":" << (total / 60 % 60 < 10 ? "0" : "");
  out << total / 60 % 60 << ":" << (total % 60 < 10 ? "0" : "") << total % 60;
  return out.str();
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::ostream& out, bool enabled)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      out_(out),
      enabled_(enabled),
      interactive_(&out == &std::cerr && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

std::string ProgressBar::render(int64_t done, const std::string& status) const {
  constexpr int kWidth = 24;
  const double fraction = std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
  const int filled = static_cast<int>(fraction * kWidth);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::ostringstream line;
  line << label_ << " [" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] "
       << done << "/" << total_;
  if (!status.empty())
    line << "  " << status;
  if (done > 0 && done < total_) {
    line << "  eta "
         << format_duration(elapsed / static_cast<double>(done) *
                            static_cast<double>(total_ - done));
  } else {
    line << "  " << format_duration(elapsed);
  }
  return line.str();
}

void ProgressBar::update(int64_t done, const std::string& status) {
  if (!enabled_)
    return;
  if (interactive_) {
    out_ << "\r\033[K" << render(done, status) << std::flush;
    return;
  }
  const int64_t decile = done * 10 / total_;
  if (decile != last_printed_decile_ && done < total_) {  // finish() prints the last line
    last_printed_decile_ = decile;
    out_ << render(done, status) << "\n" << std::flush;
  }
}

void ProgressBar::finish(const std::string& status) {
  if (!enabled_)
    return;
  if (interactive_) {
    out_ << "\r\033[K" << render(total_, status) << "\n" << std::flush;
  } else {
    out_ << render(total_, status) << "\n" << std::flush;
  }
}

}  // namespace rakv::util
