// gnuplot-driven PNG plots.
#include "rakv/util/plot.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "rakv/io/atomic_file.h"

namespace rakv::util {

namespace {
// gnuplot strings are single-quoted: drop quotes that would end them.
std::string quoted(const std::string& text) {
  std::string out;
  for (char c : text)
    out += c == '\'' ? '"' : c;
  return "'" + out + "'";
}
}  // namespace

void plot_png(const std::string& png_path, const PlotOptions& options,
              const std::vector<PlotSeries>& series) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::temp_directory_path() /
                   ("rakv-plot-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::create_directories(dir);
  std::ostringstream script;
  script << "set terminal pngcairo size 900,540 noenhanced\n"
         << "set output " << quoted(png_path + ".tmp") << "\n"
         << "set title " << quoted(options.title) << "\n"
         << (options.log_x ? "set logscale x\n" : "") << (options.log_y ? "set logscale y\n" : "")
         << "set grid\nset key left top\n"
         << "set xlabel " << quoted(options.x_label) << "\nset ylabel " << quoted(options.y_label)
         << "\nplot ";
  int index = 0;
  for (const auto& s : series) {
    const auto data = dir / ("series" + std::to_string(index) + ".dat");
    std::ofstream file(data);
    for (const auto& [x, y] : s.points)
      file << x << " " << y << "\n";
    script << (index ? ", " : "") << quoted(data.string())
           << " using 1:2 with linespoints lw 2 title " << quoted(s.title);
    ++index;
  }
  script << "\n";
  const auto script_path = dir / "plot.gp";
  std::ofstream(script_path) << script.str();
  const std::string command =
      "gnuplot " + quoted(script_path.string()) + " 2> " + quoted((dir / "err").string());
  const int status = index == 0 ? -1 : std::system(command.c_str());
  std::string error = index == 0 ? "nothing to plot" : "";
  if (status != 0 && index > 0)
    error = io::read_file((dir / "err").string());
  std::filesystem::remove_all(dir);
  if (status != 0) {
    std::error_code ignored;
    std::filesystem::remove(png_path + ".tmp", ignored);
    throw std::runtime_error("cannot draw " + png_path +
                             " (gnuplot, installed by scripts/setup.sh): " + error);
  }
  std::filesystem::rename(png_path + ".tmp", png_path);
}

}  // namespace rakv::util
