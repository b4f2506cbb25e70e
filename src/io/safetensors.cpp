// LibTorch tensors to and from safetensors files.
#include "rakv/io/safetensors.h"

#include <cstring>

#include "rakv/io/atomic_file.h"

namespace rakv::io {
namespace {

StDtype to_st_dtype(torch::ScalarType type, const std::string& name) {
  switch (type) {
    case torch::kFloat64: return StDtype::kF64;
    case torch::kFloat32: return StDtype::kF32;
    case torch::kFloat16: return StDtype::kF16;
    case torch::kBFloat16: return StDtype::kBF16;
    case torch::kInt64: return StDtype::kI64;
    case torch::kInt32: return StDtype::kI32;
    case torch::kInt16: return StDtype::kI16;
    case torch::kInt8: return StDtype::kI8;
    case torch::kUInt8: return StDtype::kU8;
    case torch::kBool: return StDtype::kBool;
    default:
      throw SafetensorsError("cannot save tensor '" + name + "': unsupported dtype " +
                             std::string(c10::toString(type)));
  }
}

torch::ScalarType to_torch_dtype(StDtype type) {
  switch (type) {
    case StDtype::kF64: return torch::kFloat64;
    case StDtype::kF32: return torch::kFloat32;
    case StDtype::kF16: return torch::kFloat16;
    case StDtype::kBF16: return torch::kBFloat16;
    case StDtype::kI64: return torch::kInt64;
    case StDtype::kI32: return torch::kInt32;
    case StDtype::kI16: return torch::kInt16;
    case StDtype::kI8: return torch::kInt8;
    case StDtype::kU8: return torch::kUInt8;
    case StDtype::kBool: return torch::kBool;
  }
  return torch::kFloat32;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<StTensorEntry> entries;
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
    StTensorEntry entry;
    entry.name = name;
    entry.dtype = to_st_dtype(cpu.scalar_type(), name);
    entry.shape = cpu.sizes().vec();
    entry.begin = offset;
    offset += static_cast<uint64_t>(cpu.numel()) * dtype_size(entry.dtype);
    entry.end = offset;
    entries.push_back(std::move(entry));
    contiguous.push_back(std::move(cpu));
  }
  std::string bytes = build_safetensors_header(entries, metadata);
  const size_t data_start = bytes.size();
  bytes.resize(data_start + offset);
  for (size_t i = 0; i < entries.size(); ++i) {
    const size_t n = entries[i].end - entries[i].begin;
    if (n > 0) std::memcpy(bytes.data() + data_start + entries[i].begin, contiguous[i].data_ptr(), n);
  }
  write_file_atomically(path, bytes);
}

TensorFile parse_safetensors(const std::string& bytes, std::string_view source) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const StLayout layout = parse_safetensors_layout(data, bytes.size(), source);
  TensorFile file;
  file.metadata = layout.metadata;
  for (const auto& entry : layout.tensors) {
    torch::Tensor t = torch::empty(entry.shape, torch::TensorOptions().dtype(to_torch_dtype(entry.dtype)));
    const size_t n = entry.end - entry.begin;
    if (n > 0) std::memcpy(t.data_ptr(), data + layout.data_start + entry.begin, n);
    file.tensors.emplace(entry.name, std::move(t));
  }
  return file;
}

TensorFile load_safetensors(const std::string& path) {
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const std::runtime_error& e) {
    throw SafetensorsError(e.what());
  }
  return parse_safetensors(bytes, path);
}

}  // namespace rakv::io
