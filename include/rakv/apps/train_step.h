// One optimizer step of GPT-2 training, shared by `rakv train` and `rakv bench-train`: forward
// and backward of every micro-batch (bf16 autocast on CUDA, fp32 master weights), gradient
// clipping without a host synchronisation, and AdamW (LibTorch's fused CUDA kernel where the
// build has it). Nothing in a step waits for the device: the loss comes back as a device tensor.
#pragma once

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include <memory>
#include <vector>

#include "rakv/config.h"
#include "rakv/model/gpt2.h"

namespace rakv::apps {

// Steps `optimizer` with at::_fused_adamw_ (one launch per parameter group) when its parameters
// are on CUDA and LibTorch >= 2.0, else with optimizer.step(). The moments and step counts stay
// in the optimizer's own state, so checkpoints and resumes do not depend on which ran.
void fused_adamw_step(torch::optim::AdamW& optimizer);

// Scales the gradients so that their global L2 norm is at most max_norm (like
// torch::nn::utils::clip_grad_norm_, but without reading the norm back to the host).
// Returns the norm before clipping as a 0-dim tensor.
torch::Tensor clip_grad_norm_no_sync(const std::vector<torch::Tensor>& parameters, double max_norm);

// Model FLOPs of one training token (forward + backward), the nanoGPT / llm.c convention:
// 6 N (N: parameters without the position table) + 12 L C T (attention scores and values).
double training_flops_per_token(const model::GPT2Impl& model);

class StepRunner {
 public:
  // AdamW over the model's decayed / undecayed parameter groups with the CONFIG_ options
  // (betas, weight decay, clipping); bf16 autocast when the model is on CUDA.
  StepRunner(model::GPT2 model, const config::Config& config, double initial_lr);

  // One optimizer step over micro-batches (inputs and targets int64 [B, T] each, on the model's
  // device) at learning rate `lr`. Returns the mean micro-batch loss, a 0-dim float32 tensor on
  // the device.
  torch::Tensor step(const std::vector<torch::Tensor>& inputs,
                     const std::vector<torch::Tensor>& targets, double lr);

  torch::optim::AdamW& optimizer() { return *optimizer_; }
  bool uses_autocast() const { return autocast_; }

 private:
  model::GPT2 model_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::vector<torch::Tensor> parameters_;
  double grad_clip_;
  bool autocast_;
};

}  // namespace rakv::apps
