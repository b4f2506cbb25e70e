// Line plots as PNG files through gnuplot (Debian's gnuplot-nox, installed by scripts/setup.sh).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace rakv::util {

struct PlotSeries {
  std::string title;
  std::vector<std::pair<double, double>> points;  // (x, y)
};

struct PlotOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  bool log_x = false;
  bool log_y = false;
};

// Draws `series` into `png_path` (written atomically: a temp file, then a rename). Throws
// std::runtime_error with gnuplot's message when it fails or is not installed.
void plot_png(const std::string& png_path, const PlotOptions& options,
              const std::vector<PlotSeries>& series);

}  // namespace rakv::util
