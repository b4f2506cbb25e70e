// last_error_detail(): the reason a launcher rejected its parameters, per host thread.
#include <cstdarg>
#include <cstdio>

#include "dispatch.cuh"

namespace rakv::kernels::cuda {
namespace {
thread_local char g_detail[512] = "";
}  // namespace

const char* last_error_detail() { return g_detail; }

namespace detail {
int invalid_argument(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(g_detail, sizeof(g_detail), fmt, args);
  va_end(args);
  return static_cast<int>(cudaErrorInvalidValue);
}
void clear_error_detail() { g_detail[0] = '\0'; }
}  // namespace detail
}  // namespace rakv::kernels::cuda
