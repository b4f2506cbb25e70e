// safetensors: bit-exact round trips for every dtype, and rejection of each kind of corrupt file.
#include "rakv/io/safetensors.h"

#include <filesystem>

#include "rakv/io/atomic_file.h"
#include "test_helpers.h"

namespace {

using rakv::io::parse_safetensors;
using rakv::testing::expect_error_containing;
using rakv::testing::TempDir;

// A file whose 8-byte length prefix and JSON header are given verbatim, followed by `data`.
std::string file_with_header(const std::string& json, const std::string& data = "") {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json + data;
}

TEST(Safetensors, RoundTripsEveryDtypeBitExactly) {
  torch::manual_seed(31);
  const rakv::io::NamedTensors tensors = {
      {"f64", torch::randn({3, 2}, torch::kFloat64)},
      {"f32", torch::randn({5}, torch::kFloat32)},
      {"f16", torch::randn({2, 2}).to(torch::kFloat16)},
      {"bf16", torch::randn({4}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000, 1000, {3}, torch::kInt64)},
      {"i32", torch::randint(-1000, 1000, {3}, torch::kInt32)},
      {"i16", torch::randint(-1000, 1000, {3}, torch::kInt16)},
      {"i8", torch::randint(-100, 100, {3}, torch::kInt8)},
      {"u8", torch::randint(0, 255, {3}, torch::kUInt8)},
      {"bool", torch::randint(0, 2, {3}, torch::kInt64).to(torch::kBool)},
      {"scalar", torch::tensor(7.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 4}).t()},
  };
  TempDir dir;
  rakv::io::save_safetensors(dir.file("t.safetensors"), tensors, {{"note", "hello"}});
  const auto loaded = rakv::io::load_safetensors(dir.file("t.safetensors"));
  EXPECT_EQ(loaded.metadata.at("note"), "hello");
  ASSERT_EQ(loaded.tensors.size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    const torch::Tensor& back = loaded.tensors.at(name);
    EXPECT_EQ(back.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(back.sizes(), tensor.sizes()) << name;
    EXPECT_TRUE(torch::equal(back, tensor)) << name;
  }
  // The atomic writer leaves no temporary file behind.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) files += entry.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, RejectsCorruptFiles) {
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data(8, '\1');
  EXPECT_NO_THROW(parse_safetensors(file_with_header("{" + ok_entry + "}", data), "ok"));

  expect_error_containing([] { parse_safetensors("abc", "f"); }, "too short for the 8-byte header length");
  std::string past_end = file_with_header("{" + ok_entry + "}", data);
  past_end[0] = static_cast<char>(0xf0);
  expect_error_containing([&] { parse_safetensors(past_end, "f"); }, "runs past the end of the file");
  expect_error_containing([&] { parse_safetensors(file_with_header("{nope", data), "f"); }, "not valid JSON");
  expect_error_containing([&] { parse_safetensors(file_with_header("[1,2]", data), "f"); }, "not a JSON object");
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header(R"({"a":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", data), "f");
      },
      "unsupported dtype 'F7'");
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data), "f");
      },
      "do not match dtype F32 and its shape");
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data), "f");
      },
      "non-negative integers");
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data), "f");
      },
      "the data section holds 8 bytes");
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                                           data),
                          "f");
      },
      "overlap");
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header("{" + ok_entry + "," + ok_entry + "}", data), "f");
      },
      "names 'a' twice");
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header(R"({"a":{"dtype":"F32","shape":[2]}})", data), "f");
      },
      "has no \"data_offsets\"");
  expect_error_containing(
      [&] { parse_safetensors(file_with_header(R"({"__metadata__":{"k":1}})"), "f"); }, "is not a string");
  // Dimensions whose product overflows 64 bits.
  expect_error_containing(
      [&] {
        parse_safetensors(file_with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],)"
                                           R"("data_offsets":[0,8]}})",
                                           data),
                          "f");
      },
      "do not match");
}

TEST(Safetensors, RefusesDuplicateNamesAndUnsupportedDtypesOnSave) {
  TempDir dir;
  expect_error_containing(
      [&] { rakv::io::save_safetensors(dir.file("x"), {{"a", torch::ones({1})}, {"a", torch::ones({1})}}); },
      "duplicate");
  expect_error_containing(
      [&] { rakv::io::save_safetensors(dir.file("x"), {{"c", torch::ones({1}, torch::kComplexFloat)}}); },
      "unsupported dtype");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x")));
}

}  // namespace
