// Thread setup and user-facing error messages.
#include "rakv/util/runtime.h"

#include <torch/torch.h>

#include <cstdlib>
#include <thread>

namespace rakv::util {

int configure_threads() {
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  return at::get_num_threads();
}

std::string one_line_message(const std::exception& error) {
  std::string message;
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&error)) {
    message = torch_error->what_without_backtrace();
  } else {
    message = error.what();
  }
  while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
    message.pop_back();
  for (char& c : message) {
    if (c == '\n')
      c = ' ';
  }
  return message;
}

}  // namespace rakv::util
