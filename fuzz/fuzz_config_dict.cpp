// Writes the config fuzz target's libFuzzer dictionary and an all-options seed, both generated
// from the option table so that they follow every option added to src/config/options.cpp.
//   fuzz_config_dict DICT_FILE SEED_DIR
#include <fstream>
#include <iostream>
#include <set>
#include <string>

#include "rakv/config.h"

namespace {

// A dictionary entry: "..." with backslash, quote and non-printable bytes escaped as \xNN.
std::string entry(const std::string& token) {
  static const char* hex = "0123456789ABCDEF";
  std::string out = "\"";
  for (unsigned char c : token) {
    if (c == '\\' || c == '"' || c < 0x20 || c >= 0x7f) {
      out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fuzz_config_dict DICT_FILE SEED_DIR\n";
    return 2;
  }
  std::set<std::string> tokens = {"=",    "\"", "\\\"",   "\\\\", "# ",  " is not set", "\n",
                                  "y",    "n",  "all",    "none", ",",   "0,1",         "-1",
                                  "1e-3", "0x", "1e-400", "nan",  "inf", "\xff",        "\r\n"};
  const rakv::config::Config defaults;
  for (const auto& spec : rakv::config::option_registry()) {
    tokens.insert(spec.name);
    tokens.insert(spec.name + "=");
    tokens.insert("# " + spec.name + " is not set");
    tokens.insert(spec.default_value);
    for (const auto& choice : spec.choices)
      tokens.insert(choice);
    if (spec.range) {
      tokens.insert(std::to_string(static_cast<int64_t>(spec.range->first)));
      tokens.insert(std::to_string(static_cast<int64_t>(spec.range->second)));
    }
  }
  tokens.erase("");
  std::ofstream dict(argv[1]);
  for (const auto& token : tokens)
    dict << entry(token) << "\n";
  std::ofstream seed(std::string(argv[2]) + "/all-defaults.config");
  seed << defaults.to_text();
  return dict && seed ? 0 : 1;
}
