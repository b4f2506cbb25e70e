// Invariant checks for the fuzz targets: a violated invariant prints what failed and aborts, which
// libFuzzer reports as a crash and saves the input that caused it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace rakv::fuzz {

[[noreturn]] inline void fail(const char* file, int line, const char* condition,
                              const std::string& what) {
  std::fprintf(stderr, "invariant violated at %s:%d: %s\n  %s\n", file, line, condition,
               what.c_str());
  std::abort();
}

}  // namespace rakv::fuzz

#define FUZZ_CHECK(condition, what)                               \
  do {                                                            \
    if (!(condition))                                             \
      ::rakv::fuzz::fail(__FILE__, __LINE__, #condition, (what)); \
  } while (false)
