// Activation checkpointing of one GPT-2 block (CONFIG_ACTIVATION_CHECKPOINTING).
#pragma once

#include <torch/types.h>

#include "rakv/model/gpt2.h"

namespace rakv::model {

// block(x), keeping only x for the backward, which recomputes the block (in the forward's CUDA
// autocast state) and backpropagates through it; the block's parameters get their gradients
// there. x must require grad (the caller runs the block plainly otherwise).
torch::Tensor checkpointed_block_forward(Block& block, const torch::Tensor& x);

}  // namespace rakv::model
