// Validation and serialisation of safetensors headers (no tensor library involved).
#include "rakv/io/safetensors_format.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

namespace rakv::io {
namespace {

using json = nlohmann::json;

// The format caps headers at 100 MB; anything larger is a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeInfo {
  StDtype dtype;
  std::string_view name;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {StDtype::kF64, "F64", 8}, {StDtype::kF32, "F32", 4}, {StDtype::kF16, "F16", 2},
    {StDtype::kBF16, "BF16", 2}, {StDtype::kI64, "I64", 8}, {StDtype::kI32, "I32", 4},
    {StDtype::kI16, "I16", 2}, {StDtype::kI8, "I8", 1}, {StDtype::kU8, "U8", 1},
    {StDtype::kBool, "BOOL", 1},
};

[[noreturn]] void fail(std::string_view source, const std::string& what) {
  throw SafetensorsError(std::string(source) + ": not a valid safetensors file: " + what);
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

StTensorEntry parse_entry(const std::string& name, const json& value, uint64_t data_size,
                          std::string_view source) {
  const std::string where = "tensor '" + name + "'";
  if (!value.is_object()) fail(source, where + " is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) fail(source, where + " has no \"" + field + "\"");
  }
  StTensorEntry entry;
  entry.name = name;
  const json& dtype = value["dtype"];
  if (!dtype.is_string()) fail(source, where + ": dtype is not a string");
  const auto dtype_text = dtype.get<std::string>();
  const DtypeInfo* info = nullptr;
  for (const auto& d : kDtypes) {
    if (d.name == dtype_text) info = &d;
  }
  if (info == nullptr) fail(source, where + ": unsupported dtype '" + dtype_text + "'");
  entry.dtype = info->dtype;

  const json& shape = value["shape"];
  if (!shape.is_array()) fail(source, where + ": shape is not an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& dim : shape) {
    if (!dim.is_number_unsigned()) {
      fail(source, where + ": shape entries must be non-negative integers");
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(INT64_MAX)) fail(source, where + ": dimension too large");
    entry.shape.push_back(static_cast<int64_t>(d));
    overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
  }
  if (std::find(entry.shape.begin(), entry.shape.end(), 0) != entry.shape.end()) {
    numel = 0;  // a zero dimension makes the tensor empty, whatever the other dimensions are
    overflow = false;
  }
  uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, info->size, &nbytes);

  const json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    fail(source, where + ": data_offsets must be two non-negative integers");
  }
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  if (entry.begin > entry.end) fail(source, where + ": data_offsets begin after they end");
  if (entry.end > data_size) {
    fail(source, where + ": data_offsets end at byte " + std::to_string(entry.end) +
                     " but the data section holds " + std::to_string(data_size) + " bytes");
  }
  if (overflow || nbytes != entry.end - entry.begin) {
    fail(source, where + ": " + std::to_string(entry.end - entry.begin) +
                     " bytes of data do not match dtype " + dtype_text + " and its shape");
  }
  return entry;
}

}  // namespace

size_t dtype_size(StDtype dtype) {
  for (const auto& d : kDtypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

std::string_view dtype_name(StDtype dtype) {
  for (const auto& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

StLayout parse_safetensors_layout(const uint8_t* bytes, size_t size, std::string_view source) {
  if (size < 8) {
    fail(source, "the file is " + std::to_string(size) +
                     " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_size = read_u64_le(bytes);
  if (header_size > kMaxHeaderBytes || header_size > size - 8) {
    fail(source, "the header length " + std::to_string(header_size) +
                     " runs past the end of the file (" + std::to_string(size) + " bytes)");
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);

  // Duplicate keys are legal JSON but ambiguous here: reject them at every nesting level.
  std::vector<std::set<std::string>> keys_per_object;
  std::string duplicate;
  auto callback = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys_per_object.emplace_back();
    if (event == json::parse_event_t::object_end && !keys_per_object.empty()) {
      keys_per_object.pop_back();
    }
    if (event == json::parse_event_t::key && !keys_per_object.empty() &&
        !keys_per_object.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_size, callback);
  } catch (const json::exception& e) {
    fail(source, std::string("the header is not valid JSON (") + e.what() + ")");
  }
  if (!duplicate.empty()) fail(source, "the header names '" + duplicate + "' twice");
  if (!header.is_object()) fail(source, "the header is not a JSON object");

  StLayout layout;
  layout.data_start = 8 + header_size;
  const uint64_t data_size = size - layout.data_start;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(source, "__metadata__ is not a JSON object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail(source, "__metadata__['" + m.key() + "'] is not a string");
        layout.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    layout.tensors.push_back(parse_entry(it.key(), it.value(), data_size, source));
  }

  std::vector<const StTensorEntry*> by_offset;
  for (const auto& t : layout.tensors) {
    if (t.begin != t.end) by_offset.push_back(&t);  // an empty byte range overlaps nothing
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const StTensorEntry* a, const StTensorEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      fail(source, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name +
                       "' overlap in the data section");
    }
  }
  return layout;
}

std::string build_safetensors_header(const std::vector<StTensorEntry>& tensors,
                                     const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || header.contains(t.name)) {
      throw SafetensorsError("cannot save tensor '" + t.name + "': duplicate or reserved name");
    }
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {t.begin, t.end}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::type_error& e) {
    throw SafetensorsError(
        std::string("cannot save: tensor names and metadata must be valid UTF-8 (") + e.what() +
        ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace rakv::io
