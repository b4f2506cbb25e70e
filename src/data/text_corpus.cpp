// Packaged training text and random batches.
#include "rakv/data/text_corpus.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <sstream>

#include "rakv/io/atomic_file.h"

namespace rakv::data {
namespace fs = std::filesystem;

namespace {

std::vector<std::string> split_fortunes(const std::string& text) {
  std::vector<std::string> entries;
  std::istringstream in(text);
  std::string line;
  std::string entry;
  auto flush = [&] {
    const auto first = entry.find_first_not_of(" \t\n");
    if (first != std::string::npos) entries.push_back(entry.substr(first));
    entry.clear();
  };
  while (std::getline(in, line)) {
    if (line == "%") {
      flush();
    } else {
      entry += line;
      entry += '\n';
    }
  }
  flush();
  return entries;
}

std::vector<fs::path> regular_files(const fs::path& directory, bool fortunes_only) {
  std::vector<fs::path> files;
  for (const auto& item : fs::directory_iterator(directory)) {
    if (!item.is_regular_file() || item.is_symlink()) continue;
    const std::string ext = item.path().extension().string();
    if (fortunes_only && (ext == ".dat" || ext == ".u8")) continue;
    files.push_back(item.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string megabytes(size_t bytes) {
  std::ostringstream out;
  out.precision(2);
  out << std::fixed << static_cast<double>(bytes) / 1e6 << " MB";
  return out.str();
}

}  // namespace

TextCorpus load_corpus(const std::string& path, double val_fraction) {
  TORCH_CHECK(val_fraction > 0 && val_fraction < 1, "validation fraction must be in (0, 1), got ",
              val_fraction);
  TextCorpus corpus;
  if (path.empty()) {
    if (!fs::is_directory(kFortunesDirectory)) {
      throw std::runtime_error(std::string("no training text: ") + kFortunesDirectory +
                               " is missing (install Debian's `fortunes` package, e.g. "
                               "scripts/setup.sh, or set CONFIG_DATA to a text file)");
    }
    size_t index = 0;
    for (const auto& file : regular_files(kFortunesDirectory, true)) {
      for (const auto& entry : split_fortunes(io::read_file(file.string()))) {
        // Entry k is held out when floor((k+1) f) > floor(k f): every 1/f-th entry.
        const bool held_out = static_cast<int64_t>((index + 1) * val_fraction) >
                              static_cast<int64_t>(index * val_fraction);
        auto& split = held_out ? corpus.val : corpus.train;
        split.insert(split.end(), entry.begin(), entry.end());
        split.push_back('\n');
        ++index;
      }
    }
    corpus.description = "fortunes (" + std::to_string(index) + " entries): ";
  } else {
    std::string text;
    if (fs::is_directory(path)) {
      for (const auto& file : regular_files(path, false)) text += io::read_file(file.string()) + "\n";
    } else {
      text = io::read_file(path);
    }
    const size_t val_bytes = static_cast<size_t>(static_cast<double>(text.size()) * val_fraction);
    corpus.train.assign(text.begin(), text.end() - static_cast<std::ptrdiff_t>(val_bytes));
    corpus.val.assign(text.end() - static_cast<std::ptrdiff_t>(val_bytes), text.end());
    corpus.description = path + ": ";
  }
  if (corpus.train.empty() || corpus.val.empty()) {
    throw std::runtime_error("training text '" + (path.empty() ? kFortunesDirectory : path) +
                             "' is empty or too small to split");
  }
  corpus.description +=
      megabytes(corpus.train.size()) + " train, " + megabytes(corpus.val.size()) + " validation";
  return corpus;
}

std::pair<torch::Tensor, torch::Tensor> sample_batch(const std::vector<uint8_t>& tokens,
                                                     int64_t batch, int64_t block_size,
                                                     uint64_t seed) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < block_size + 1) {
    throw std::runtime_error("the text holds " + std::to_string(n) +
                             " tokens, fewer than CONFIG_BLOCK_SIZE + 1 = " +
                             std::to_string(block_size + 1));
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> start(0, n - block_size - 1);
  torch::Tensor x = torch::empty({batch, block_size}, torch::kInt64);
  torch::Tensor y = torch::empty({batch, block_size}, torch::kInt64);
  auto xa = x.accessor<int64_t, 2>();
  auto ya = y.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t s = start(rng);
    for (int64_t t = 0; t < block_size; ++t) {
      xa[b][t] = tokens[s + t];
      ya[b][t] = tokens[s + t + 1];
    }
  }
  return {x, y};
}

}  // namespace rakv::data
