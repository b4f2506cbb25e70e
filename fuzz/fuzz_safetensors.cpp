// Fuzz target for the safetensors container: parse_safetensors_layout on arbitrary bytes, and
// build_safetensors_header on arbitrary layouts. Invariants checked on every input:
//  - parsing either returns a layout or throws SafetensorsError: any other exception, a crash or
//    a sanitizer report is a bug;
//  - an accepted layout has its data section right after the header, and every tensor a unique
//    name, non-negative dimensions, offsets inside the data section and exactly
//    numel(shape) x dtype size bytes; no two non-empty tensors overlap;
//  - the accepted layout written again with build_safetensors_header, followed by the same data
//    section, parses back to the same tensors and metadata (header padded to 8 bytes);
//  - a layout made up from the input bytes (any names, dtypes, shapes, gaps and metadata) is
//    refused by build_safetensors_header with SafetensorsError, or parses back exactly.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "rakv/io/safetensors_format.h"

namespace {

using rakv::io::SafetensorsError;
using rakv::io::StDtype;
using rakv::io::StLayout;
using rakv::io::StTensorEntry;

constexpr StDtype kAllDtypes[] = {StDtype::kF64, StDtype::kF32, StDtype::kF16, StDtype::kBF16,
                                  StDtype::kI64, StDtype::kI32, StDtype::kI16, StDtype::kI8,
                                  StDtype::kU8,  StDtype::kBool};

std::string describe(const StTensorEntry& t) {
  std::string shape;
  for (int64_t d : t.shape)
    shape += (shape.empty() ? "" : ",") + std::to_string(d);
  return "'" + t.name + "' " + std::string(rakv::io::dtype_name(t.dtype)) + " [" + shape +
         "] at [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ")";
}

bool same_tensors(const std::vector<StTensorEntry>& a, const std::vector<StTensorEntry>& b) {
  auto key = [](const StTensorEntry& t) {
    return std::make_tuple(t.name, t.dtype, t.shape, t.begin, t.end);
  };
  std::vector<decltype(key(a.front()))> ka, kb;
  for (const auto& t : a)
    ka.push_back(key(t));
  for (const auto& t : b)
    kb.push_back(key(t));
  std::sort(ka.begin(), ka.end());
  std::sort(kb.begin(), kb.end());
  return ka == kb;
}

void check_layout(const StLayout& layout, size_t file_size) {
  FUZZ_CHECK(layout.data_start >= 8 && layout.data_start <= file_size, "data section start");
  const uint64_t data_size = file_size - layout.data_start;
  std::set<std::string> names;
  for (const auto& t : layout.tensors) {
    FUZZ_CHECK(t.name != "__metadata__" && names.insert(t.name).second, describe(t));
    FUZZ_CHECK(t.begin <= t.end && t.end <= data_size, describe(t));
    uint64_t bytes = rakv::io::dtype_size(t.dtype);
    bool empty = false;
    bool overflow = false;
    for (int64_t d : t.shape) {
      FUZZ_CHECK(d >= 0, describe(t));
      empty = empty || d == 0;
      overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes);
    }
    FUZZ_CHECK(empty ? t.begin == t.end : !overflow && bytes == t.end - t.begin, describe(t));
  }
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    for (size_t j = i + 1; j < layout.tensors.size(); ++j) {
      const auto& a = layout.tensors[i];
      const auto& b = layout.tensors[j];
      const bool disjoint =
          a.begin == a.end || b.begin == b.end || a.end <= b.begin || b.end <= a.begin;
      FUZZ_CHECK(disjoint, describe(a) + " overlaps " + describe(b));
    }
  }
}

// Writes `layout` with build_safetensors_header followed by `data`, parses it and compares.
void check_round_trip(const StLayout& layout, const std::string& data) {
  const std::string header = rakv::io::build_safetensors_header(layout.tensors, layout.metadata);
  FUZZ_CHECK(header.size() >= 8 && (header.size() - 8) % 8 == 0, "header padding");
  const std::string file = header + data;
  StLayout back;
  try {
    back = rakv::io::parse_safetensors_layout(reinterpret_cast<const uint8_t*>(file.data()),
                                              file.size(), "round-trip");
  } catch (const SafetensorsError& e) {
    rakv::fuzz::fail(__FILE__, __LINE__, "written header parses back",
                     std::string(e.what()) + "\n--- header ---\n" + header.substr(8));
  }
  FUZZ_CHECK(back.data_start == header.size(), "data section start after a round trip");
  FUZZ_CHECK(same_tensors(back.tensors, layout.tensors), "tensors differ after a round trip");
  FUZZ_CHECK(back.metadata == layout.metadata, "metadata differs after a round trip");
}

// A layout made up from the fuzzer's bytes, laid out the way a writer would (in order, with
// optional gaps), for the writer-side round trip.
void check_made_up_layout(const uint8_t* bytes, size_t size) {
  FuzzedDataProvider in(bytes, size);
  StLayout layout;
  uint64_t offset = 0;
  const int tensors = in.ConsumeIntegralInRange(0, 6);
  for (int i = 0; i < tensors; ++i) {
    StTensorEntry t;
    t.name = in.ConsumeRandomLengthString(24);
    t.dtype = in.PickValueInArray(kAllDtypes);
    const int rank = in.ConsumeIntegralInRange(0, 4);
    // Small dimensions, or any non-negative ones around a zero that makes the tensor empty.
    const int zero_at = rank > 0 && in.ConsumeBool() ? in.ConsumeIntegralInRange(0, rank - 1) : -1;
    uint64_t numel = 1;
    for (int r = 0; r < rank; ++r) {
      const int64_t d = r == zero_at   ? 0
                        : zero_at >= 0 ? in.ConsumeIntegralInRange<int64_t>(0, INT64_MAX)
                                       : in.ConsumeIntegralInRange<int64_t>(0, 12);
      t.shape.push_back(d);
      numel = zero_at >= 0 ? 0 : numel * static_cast<uint64_t>(d);
    }
    offset += in.ConsumeIntegralInRange(0, 3);  // a gap that belongs to no tensor
    t.begin = offset;
    offset += numel * rakv::io::dtype_size(t.dtype);
    t.end = offset;
    layout.tensors.push_back(std::move(t));
  }
  const int entries = in.ConsumeIntegralInRange(0, 3);
  for (int i = 0; i < entries; ++i) {
    std::string key = in.ConsumeRandomLengthString(16);
    layout.metadata[key] = in.ConsumeRandomLengthString(64);
  }
  offset += in.ConsumeIntegralInRange(0, 3);
  try {
    rakv::io::build_safetensors_header(layout.tensors, layout.metadata);
  } catch (const SafetensorsError&) {
    return;  // refused with a message: names that cannot be written
  }
  check_round_trip(layout, std::string(offset, '\0'));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  StLayout layout;
  bool accepted = true;
  try {
    layout = rakv::io::parse_safetensors_layout(data, size, "fuzz");
  } catch (const SafetensorsError&) {
    accepted = false;
  }
  if (accepted) {
    check_layout(layout, size);
    check_round_trip(layout, std::string(reinterpret_cast<const char*>(data) + layout.data_start,
                                         size - layout.data_start));
  }
  check_made_up_layout(data, size);
  return 0;
}
