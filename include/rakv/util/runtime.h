// Process-wide runtime setup shared by the CLI, tests and benchmarks.
#pragma once

#include <exception>
#include <string>

namespace rakv::util {

// Uses every core for LibTorch's intra-op pool (its default here is 1 thread) unless
// OMP_NUM_THREADS is set. Returns the number of threads in use.
int configure_threads();

// The message of an exception as one line for the user: LibTorch errors without their C++
// backtrace, newlines folded.
std::string one_line_message(const std::exception& error);

}  // namespace rakv::util
