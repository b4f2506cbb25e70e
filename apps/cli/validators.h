// Validators for numeric options. CLI11 2.3's PositiveNumber and NonNegativeNumber report a bad
// value as "not in range 0.000000 to " followed by DBL_MAX in full (a 300-digit error line), even
// for a value that is not a number at all; these say what is wrong in a few words:
//   rakv: error: --tokens: must be non-negative, got -1
#pragma once

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <string>

namespace rakv::cli {

inline CLI::Validator number_validator(bool zero_allowed) {
  const std::string requirement = zero_allowed ? "non-negative" : "positive";
  return CLI::Validator(
      [zero_allowed, requirement](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size()) {
          return "'" + text + "' is not a number";
        }
        return (zero_allowed ? value >= 0 : value > 0) ? ""
                                                       : "must be " + requirement + ", got " + text;
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}

inline const CLI::Validator kNonNegative = number_validator(true);
inline const CLI::Validator kPositive = number_validator(false);

}  // namespace rakv::cli
