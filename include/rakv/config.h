// Kconfig-style configuration: every option rakv understands, its type, default and help text,
// and a parser for `.config` files (`CONFIG_X=value`, `# CONFIG_X is not set`).
//
// The option table (src/config/options.cpp) is the single source of truth: the `Kconfig` file in
// the repository is generated from it (`rakv config --kconfig`) and a test checks they agree.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rakv::config {

// Thrown for every malformed or out-of-range configuration input; the message names the
// source (file:line or --set) and what was wrong.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class OptionType { kBool, kInt, kFloat, kString, kChoice };

struct OptionSpec {
  std::string name;           // full name, e.g. "CONFIG_N_LAYER"
  OptionType type;
  std::string default_value;  // canonical text: "y"/"n", "4", "3e-3", "fused"
  std::string menu;           // Kconfig menu it is listed under
  std::string prompt;         // one-line description
  std::string help;           // longer help text
  std::optional<std::pair<double, double>> range;  // inclusive bounds for int and float
  std::vector<std::string> choices;                 // allowed values of a kChoice option
  std::string depends_on;     // a bool option that must be y for this one to matter
};

// Every option, in the order the Kconfig menus list them.
const std::vector<OptionSpec>& option_registry();
// The spec of `name` (with the CONFIG_ prefix), or nullptr.
const OptionSpec* find_option(std::string_view name);
// The text of the repository's Kconfig file.
std::string generate_kconfig();

// A complete set of option values (every registered option has one).
class Config {
 public:
  // All options at their defaults: the embedded default job (a tiny RA + R-MLP GPT-2 on CPU).
  Config();

  // Parses `.config` text over the defaults. `source` names the input in error messages.
  static Config parse_text(std::string_view text, std::string_view source);
  static Config parse_file(const std::string& path);

  // Applies one `CONFIG_X=value` assignment (a CLI --set); validates like the parser.
  void apply_assignment(std::string_view assignment, std::string_view source = "--set");
  // Sets one option from its textual value; throws ConfigError naming `source` when invalid.
  void set(std::string_view name, std::string_view value, std::string_view source = "set");

  bool get_bool(std::string_view name) const;
  int64_t get_int(std::string_view name) const;
  double get_float(std::string_view name) const;
  const std::string& get_string(std::string_view name) const;  // kString and kChoice

  // The full configuration in `.config` syntax (every option, grouped by menu).
  std::string to_text() const;
  // Only the options that differ from the defaults (a defconfig).
  std::string to_minimal_text() const;

  bool operator==(const Config& other) const { return values_ == other.values_; }

 private:
  const std::string& raw(std::string_view name) const;
  std::map<std::string, std::string, std::less<>> values_;  // canonical text per option
};

// Parses "all", "none" or a comma-separated list of layer indices into a mask of n_layer
// entries. `option` names the option in error messages.
std::vector<bool> parse_layer_list(const std::string& text, int64_t n_layer,
                                   std::string_view option);

}  // namespace rakv::config
