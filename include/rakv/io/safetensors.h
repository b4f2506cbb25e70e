// Reading and writing LibTorch tensors as safetensors files (the Hugging Face format).
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "rakv/io/safetensors_format.h"

namespace rakv::io {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct TensorFile {
  std::map<std::string, torch::Tensor> tensors;  // CPU tensors, contiguous
  std::map<std::string, std::string> metadata;
};

// Writes `tensors` (any device; copied to the CPU) and `metadata` to `path` atomically.
// Supported dtypes: float64/32/16, bfloat16, int64/32/16/8, uint8, bool. Throws
// SafetensorsError for an unsupported dtype or a duplicate name.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates a whole file (see parse_safetensors_layout for what is rejected).
TensorFile load_safetensors(const std::string& path);

// The same from bytes in memory; `source` names the input in error messages.
TensorFile parse_safetensors(const std::string& bytes, std::string_view source);

}  // namespace rakv::io
