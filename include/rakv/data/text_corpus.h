// Byte-level training text: Debian's fortunes by default (packaged, no downloads), or any UTF-8
// file or directory of files. Every byte is a token (vocabulary 256).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rakv::data {

// Where Debian's `fortunes` package installs its plain-text files.
inline constexpr const char* kFortunesDirectory = "/usr/share/games/fortunes";

struct TextCorpus {
  std::vector<uint8_t> train;
  std::vector<uint8_t> val;
  std::string description;  // e.g. "fortunes: 1.9 MB train, 0.2 MB validation"
};

// Loads `path` (empty: the fortunes) and splits it into training and validation text. Fortune
// entries are split by entry (every ~1/val_fraction-th entry is held out), so both splits cover
// every topic; other text holds out its last val_fraction. Throws std::runtime_error with what
// is missing (e.g. the package to install) when nothing can be read.
TextCorpus load_corpus(const std::string& path, double val_fraction);

// Draws `batch` windows of block_size + 1 tokens from `tokens` with a generator seeded by
// `seed`: returns inputs and next-token targets, int64 [batch, block_size] each. Throws when the
// text is shorter than block_size + 1 tokens.
std::pair<torch::Tensor, torch::Tensor> sample_batch(const std::vector<uint8_t>& tokens,
                                                     int64_t batch, int64_t block_size,
                                                     uint64_t seed);

}  // namespace rakv::data
