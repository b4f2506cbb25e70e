// The safetensors container format, without any tensor library: validation of the header and
// layout of the data section, and serialisation of a header. Used by the LibTorch reader and
// writer (safetensors.h) and by the fuzz target, which feeds it arbitrary bytes.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section. The JSON
// object maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
// to the data section) and may hold "__metadata__": {string: string}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace rakv::io {

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class StDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element of `dtype`.
size_t dtype_size(StDtype dtype);
// "F32", "BF16", ...
std::string_view dtype_name(StDtype dtype);

struct StTensorEntry {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section, end exclusive
  uint64_t end = 0;
};

struct StLayout {
  std::vector<StTensorEntry> tensors;  // sorted by name (the JSON object's order)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // byte offset of the data section in the file
};

// Parses and validates the header of a safetensors file held in `bytes`. Rejects: a file too
// short for the length field, a header length past the end of the file, non-JSON or non-object
// headers, duplicate names, unknown dtypes, malformed shapes or offsets, offsets outside the data
// section, overlapping tensors, and a byte range that does not match dtype x shape. `source`
// names the input in error messages.
StLayout parse_safetensors_layout(const uint8_t* bytes, size_t size, std::string_view source);

// Serialises a header for `tensors` (their offsets must already be set) and `metadata`, including
// the 8-byte length prefix and space padding to an 8-byte boundary. Throws SafetensorsError for a
// duplicate tensor name, the reserved name "__metadata__", or a name or metadata string that is
// not valid UTF-8 (JSON cannot hold it).
std::string build_safetensors_header(const std::vector<StTensorEntry>& tensors,
                                     const std::map<std::string, std::string>& metadata);

}  // namespace rakv::io
