// `.config` parsing, validation and printing, and generation of the Kconfig file.
#include "rakv/config.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

namespace rakv::config {
namespace {

std::string_view trim(std::string_view s) {
  const char* space = " \t\r\n";
  const auto begin = s.find_first_not_of(space);
  if (begin == std::string_view::npos) return {};
  const auto end = s.find_last_not_of(space);
  return s.substr(begin, end - begin + 1);
}

[[noreturn]] void fail(std::string_view source, const std::string& what) {
  throw ConfigError(std::string(source) + ": " + what);
}

const OptionSpec& spec_or_throw(std::string_view name, std::string_view source) {
  const OptionSpec* spec = find_option(name);
  if (spec == nullptr) {
    fail(source, "unknown option " + std::string(name) +
                     " (`rakv config --list` prints every option)");
  }
  return *spec;
}

// Removes surrounding double quotes and resolves \" and \\ escapes.
std::string unquote(std::string_view value, std::string_view source) {
  if (value.size() < 2 || value.front() != '"' || value.back() != '"') {
    if (!value.empty() && value.front() == '"') fail(source, "unterminated string value");
    return std::string(value);
  }
  std::string out;
  for (size_t i = 1; i + 1 < value.size(); ++i) {
    if (value[i] == '\\' && i + 2 < value.size()) ++i;
    out.push_back(value[i]);
  }
  return out;
}

std::string quote(const std::string& value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

// Strings end up in checkpoint metadata (JSON, which must be UTF-8) and in one `.config` line.
bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t extra = 0;
    uint32_t code = 0;
    if ((lead & 0xe0) == 0xc0) {
      extra = 1;
      code = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      extra = 2;
      code = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      extra = 3;
      code = lead & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (size_t k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    constexpr uint32_t kSmallest[] = {0, 0x80, 0x800, 0x10000};
    if (code < kSmallest[extra] || (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

std::string format_bound(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

// Validates `value` against `spec` and returns its canonical text.
std::string canonical_value(const OptionSpec& spec, std::string_view value,
                            std::string_view source) {
  const std::string where = std::string(source) + ": " + spec.name;
  switch (spec.type) {
    case OptionType::kBool: {
      if (value == "y" || value == "n") return std::string(value);
      throw ConfigError(where + " must be y or n, got '" + std::string(value) + "'");
    }
    case OptionType::kInt: {
      int64_t parsed = 0;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);
      if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
        throw ConfigError(where + " must be an integer, got '" + std::string(value) + "'");
      }
      if (spec.range && (static_cast<double>(parsed) < spec.range->first ||
                         static_cast<double>(parsed) > spec.range->second)) {
        throw ConfigError(where + " must be in [" + format_bound(spec.range->first) + ", " +
                          format_bound(spec.range->second) + "], got " + std::to_string(parsed));
      }
      return std::to_string(parsed);
    }
    case OptionType::kFloat: {
      const std::string text(value);
      char* end = nullptr;
      errno = 0;
      const double parsed = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(parsed)) {
        throw ConfigError(where + " must be a finite number, got '" + text + "'");
      }
      if (errno == ERANGE) {  // underflow: get_float's std::stod would throw on this text
        throw ConfigError(where + " must be a finite number, got '" + text +
                          "' (beyond the precision of a double)");
      }
      if (spec.range && (parsed < spec.range->first || parsed > spec.range->second)) {
        throw ConfigError(where + " must be in [" + format_bound(spec.range->first) + ", " +
                          format_bound(spec.range->second) + "], got " + text);
      }
      return text;
    }
    case OptionType::kString:
      if (value.find('\n') != std::string_view::npos) {
        throw ConfigError(where + " must be a single line (it contains a newline)");
      }
      if (!is_valid_utf8(value)) throw ConfigError(where + " must be valid UTF-8 text");
      return std::string(value);
    case OptionType::kChoice: {
      for (const auto& choice : spec.choices) {
        if (choice == value) return choice;
      }
      std::string allowed;
      for (const auto& choice : spec.choices) allowed += (allowed.empty() ? "" : "|") + choice;
      throw ConfigError(where + " must be one of " + allowed + ", got '" + std::string(value) +
                        "'");
    }
  }
  throw ConfigError(where + ": unhandled option type");
}

std::string kconfig_type(OptionType type) {
  switch (type) {
    case OptionType::kBool:
      return "bool";
    case OptionType::kInt:
      return "int";
    default:
      return "string";  // Kconfig has no float or free choice-of-strings type
  }
}

std::string line_for(const OptionSpec& spec, const std::string& value) {
  if (spec.type == OptionType::kBool) {
    return value == "y" ? spec.name + "=y" : "# " + spec.name + " is not set";
  }
  if (spec.type == OptionType::kInt) return spec.name + "=" + value;
  return spec.name + "=" + quote(value);
}

std::string render(const std::map<std::string, std::string, std::less<>>& values,
                   bool only_changed) {
  std::ostringstream out;
  std::string menu;
  for (const auto& spec : option_registry()) {
    const std::string& value = values.find(spec.name)->second;
    if (only_changed && value == spec.default_value) continue;
    if (!only_changed && spec.menu != menu) {
      menu = spec.menu;
      out << "\n#\n# " << menu << "\n#\n";
    }
    out << line_for(spec, value) << "\n";
  }
  return out.str();
}

}  // namespace

Config::Config() {
  for (const auto& spec : option_registry()) values_[spec.name] = spec.default_value;
}

Config Config::parse_text(std::string_view text, std::string_view source) {
  Config config;
  std::set<std::string, std::less<>> seen;
  size_t line_number = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    const std::string_view line = trim(text.substr(pos, end - pos));
    pos = end + 1;
    ++line_number;
    const std::string where = std::string(source) + ":" + std::to_string(line_number);
    if (line.empty()) continue;
    std::string name;
    std::string value;
    if (line.front() == '#') {
      // Kconfig writes a disabled bool as "# CONFIG_X is not set"; other comments are free text.
      constexpr std::string_view suffix = " is not set";
      const std::string_view body = trim(line.substr(1));
      if (body.rfind("CONFIG_", 0) != 0 || body.size() <= suffix.size() ||
          body.substr(body.size() - suffix.size()) != suffix) {
        continue;
      }
      name = std::string(body.substr(0, body.size() - suffix.size()));
      const OptionSpec& spec = spec_or_throw(name, where);
      if (spec.type != OptionType::kBool) {
        fail(where, name + " is not a bool option and cannot be 'not set'");
      }
      value = "n";
    } else {
      const auto eq = line.find('=');
      if (line.rfind("CONFIG_", 0) != 0 || eq == std::string_view::npos) {
        fail(where, "expected CONFIG_NAME=value, got '" + std::string(line) + "'");
      }
      name = std::string(trim(line.substr(0, eq)));
      value = unquote(trim(line.substr(eq + 1)), where);
    }
    if (!seen.insert(name).second) fail(where, name + " is set twice");
    config.set(name, value, where);
  }
  return config;
}

Config Config::parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open config file");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return parse_text(buffer.str(), path);
}

void Config::apply_assignment(std::string_view assignment, std::string_view source) {
  const auto eq = assignment.find('=');
  if (eq == std::string_view::npos || assignment.rfind("CONFIG_", 0) != 0) {
    fail(source, "expected CONFIG_NAME=value, got '" + std::string(assignment) + "'");
  }
  set(trim(assignment.substr(0, eq)), unquote(trim(assignment.substr(eq + 1)), source), source);
}

void Config::set(std::string_view name, std::string_view value, std::string_view source) {
  const OptionSpec& spec = spec_or_throw(name, source);
  values_[spec.name] = canonical_value(spec, value, source);
}

const std::string& Config::raw(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw ConfigError("internal: unknown option " + std::string(name));
  return it->second;
}

bool Config::get_bool(std::string_view name) const { return raw(name) == "y"; }
int64_t Config::get_int(std::string_view name) const { return std::stoll(raw(name)); }
double Config::get_float(std::string_view name) const { return std::stod(raw(name)); }
const std::string& Config::get_string(std::string_view name) const { return raw(name); }

std::string Config::to_text() const {
  return "#\n# rakv configuration (all options; `rakv config --list` describes them)\n#" +
         render(values_, false);
}

std::string Config::to_minimal_text() const { return render(values_, true); }

std::string generate_kconfig() {
  std::ostringstream out;
  out << "# rakv configuration options. Generated by `rakv config --kconfig` from\n"
         "# src/config/options.cpp; a test checks that this file matches it.\n"
         "# Float options are `string` here because Kconfig has no float type.\n\n"
         "mainmenu \"rakv configuration\"\n";
  std::string menu;
  for (const auto& spec : option_registry()) {
    if (spec.menu != menu) {
      if (!menu.empty()) out << "\nendmenu\n";
      menu = spec.menu;
      out << "\nmenu \"" << menu << "\"\n";
    }
    out << "\nconfig " << spec.name.substr(7) << "\n";
    out << "\t" << kconfig_type(spec.type) << " \"" << spec.prompt << "\"\n";
    if (!spec.depends_on.empty()) out << "\tdepends on " << spec.depends_on.substr(7) << "\n";
    if (spec.type == OptionType::kInt && spec.range) {
      out << "\trange " << static_cast<int64_t>(spec.range->first) << " "
          << static_cast<int64_t>(spec.range->second) << "\n";
    }
    if (spec.type == OptionType::kBool || spec.type == OptionType::kInt) {
      out << "\tdefault " << spec.default_value << "\n";
    } else {
      out << "\tdefault " << quote(spec.default_value) << "\n";
    }
    out << "\thelp\n";
    std::istringstream words(spec.help);
    std::string word;
    std::string line;
    while (words >> word) {
      if (!line.empty() && line.size() + 1 + word.size() > 72) {
        out << "\t  " << line << "\n";
        line.clear();
      }
      line += (line.empty() ? "" : " ") + word;
    }
    if (!line.empty()) out << "\t  " << line << "\n";
    if (spec.type == OptionType::kChoice) {
      std::string allowed;
      for (const auto& choice : spec.choices) allowed += (allowed.empty() ? "" : ", ") + choice;
      out << "\t  Allowed values: " << allowed << ".\n";
    } else if (spec.type == OptionType::kFloat && spec.range) {
      out << "\t  A number in [" << format_bound(spec.range->first) << ", "
          << format_bound(spec.range->second) << "].\n";
    }
  }
  if (!menu.empty()) out << "\nendmenu\n";
  return out.str();
}

std::vector<bool> parse_layer_list(const std::string& text, int64_t n_layer,
                                   std::string_view option) {
  const std::string_view trimmed = trim(text);
  if (trimmed == "all") return std::vector<bool>(n_layer, true);
  std::vector<bool> mask(n_layer, false);
  if (trimmed == "none" || trimmed.empty()) return mask;
  size_t pos = 0;
  while (pos <= trimmed.size()) {
    const size_t end = std::min(trimmed.find(',', pos), trimmed.size());
    const std::string_view item = trim(trimmed.substr(pos, end - pos));
    pos = end + 1;
    int64_t layer = -1;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), layer);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size()) {
      throw ConfigError(std::string(option) + ": expected \"all\", \"none\" or layer indices " +
                        "like 0,2,3, got '" + text + "'");
    }
    if (layer < 0 || layer >= n_layer) {
      throw ConfigError(std::string(option) + " lists layer " + std::to_string(layer) +
                        " but the model has " + std::to_string(n_layer) +
                        " layers (CONFIG_N_LAYER)");
    }
    mask[layer] = true;
  }
  return mask;
}

}  // namespace rakv::config
