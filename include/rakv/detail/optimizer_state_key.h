// The key under which torch::optim keeps a parameter's state: a string in LibTorch 1.x, the
// TensorImpl pointer itself in 2.x. Resolved from the map's own key type so both builds work.
// Shared by checkpoints (saving and restoring AdamW state) and the fused AdamW step.
#pragma once

#include <torch/types.h>

#include <sstream>
#include <string>
#include <type_traits>

namespace rakv::detail {

template <typename StateMap>
typename StateMap::key_type optimizer_state_key(const StateMap&, const torch::Tensor& p) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;  // what LibTorch 1.x's c10::guts::to_string(ptr) produces
    out << p.unsafeGetTensorImpl();
    return out.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

}  // namespace rakv::detail
