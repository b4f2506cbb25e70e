// Fuzz target for the `.config` parser: Config::parse_text, Config::apply_assignment (`--set`) and
// parse_layer_list on arbitrary bytes. Invariants checked on every input:
//  - parsing either returns a Config or throws ConfigError: any other exception, a crash or a
//    sanitizer report is a bug;
//  - an accepted configuration printed with to_text() or to_minimal_text() parses back to an equal
//    Config, and to_text() of that is the same text (a fixed point);
//  - every option reads back with the getter of its type, as training reads it: integers and
//    floats within their range, floats finite, choices among the allowed values;
//  - the layer lists give a mask of CONFIG_N_LAYER entries or throw ConfigError;
//  - the printed configuration can be stored as safetensors metadata, as every checkpoint does;
//  - the input lines used as `--set` assignments are each rejected with ConfigError or applied,
//    and the resulting configuration satisfies all of the above.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "rakv/config.h"
#include "rakv/io/safetensors_format.h"

namespace {

using rakv::config::Config;
using rakv::config::ConfigError;
using rakv::config::OptionType;

Config reparse(const std::string& text, const char* what) {
  try {
    return Config::parse_text(text, what);
  } catch (const ConfigError& e) {
    rakv::fuzz::fail(__FILE__, __LINE__, what, std::string(e.what()) + "\n--- text ---\n" + text);
  }
}

bool in_range(const rakv::config::OptionSpec& spec, double value) {
  return !spec.range || (value >= spec.range->first && value <= spec.range->second);
}

void check_getters(const Config& cfg) {
  for (const auto& spec : rakv::config::option_registry()) {
    switch (spec.type) {
      case OptionType::kBool:
        cfg.get_bool(spec.name);
        break;
      case OptionType::kInt: {
        const int64_t value = cfg.get_int(spec.name);
        FUZZ_CHECK(in_range(spec, static_cast<double>(value)), spec.name);
        break;
      }
      case OptionType::kFloat: {
        const double value = cfg.get_float(spec.name);
        FUZZ_CHECK(std::isfinite(value) && in_range(spec, value),
                   spec.name + " = " + cfg.get_string(spec.name));
        break;
      }
      case OptionType::kString:
        cfg.get_string(spec.name);
        break;
      case OptionType::kChoice: {
        const std::string& value = cfg.get_string(spec.name);
        bool allowed = false;
        for (const auto& choice : spec.choices)
          allowed = allowed || choice == value;
        FUZZ_CHECK(allowed, spec.name + " = " + value);
        break;
      }
    }
  }
}

void check_layer_lists(const Config& cfg) {
  const int64_t n_layer = cfg.get_int("CONFIG_N_LAYER");
  for (const char* option : {"CONFIG_RA_LAYERS", "CONFIG_RMLP_LAYERS"}) {
    try {
      const auto mask = rakv::config::parse_layer_list(cfg.get_string(option), n_layer, option);
      FUZZ_CHECK(static_cast<int64_t>(mask.size()) == n_layer, option);
    } catch (const ConfigError&) {
    }
  }
}

void check_accepted(const Config& cfg) {
  const std::string text = cfg.to_text();
  const Config back = reparse(text, "to_text");
  FUZZ_CHECK(back == cfg, "to_text() does not parse back to the same config:\n" + text);
  FUZZ_CHECK(back.to_text() == text, "to_text() is not a fixed point:\n" + text);
  const std::string minimal = cfg.to_minimal_text();
  FUZZ_CHECK(reparse(minimal, "to_minimal_text") == cfg,
             "to_minimal_text() does not parse back to the same config:\n" + minimal);
  check_getters(cfg);
  check_layer_lists(cfg);
  try {
    rakv::io::build_safetensors_header({}, {{"config", text}});
  } catch (const std::exception& e) {
    rakv::fuzz::fail(__FILE__, __LINE__, "config as checkpoint metadata", e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<Config> parsed;
  try {
    parsed = Config::parse_text(text, "fuzz");
  } catch (const ConfigError&) {
  }
  if (parsed)
    check_accepted(*parsed);

  // The same lines as command-line assignments, applied in turn as repeated --set flags are.
  Config assigned;
  bool any = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    const std::string_view assignment = text.substr(pos, end - pos);
    pos = end + 1;
    try {
      assigned.apply_assignment(assignment);
      any = true;
    } catch (const ConfigError&) {
    }
  }
  if (any)
    check_accepted(assigned);
  return 0;
}
