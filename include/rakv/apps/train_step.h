// One optimizer step of GPT-2 training, shared by `rakv train` and `rakv bench-train`: forward
// and backward of every micro-batch (bf16 autocast on CUDA, fp32 master weights), gradient
// clipping without a host synchronisation, and AdamW (LibTorch's fused CUDA kernel where the
// build has it). Nothing in a step waits for the device: the loss comes back as a device tensor.
// With CONFIG_CUDA_GRAPHS the whole step (every micro-batch's forward and backward, clipping and
// AdamW) is captured once into a CUDA graph and replayed: one launch instead of ~1000 per step.
#pragma once

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include <memory>
#include <vector>

#include "rakv/config.h"
#include "rakv/model/gpt2.h"
#include "rakv/util/cuda_graph.h"

namespace rakv::apps {

// Steps `optimizer` with at::_fused_adamw_ (one launch per parameter group) when its parameters
// are on CUDA and LibTorch >= 2.0, else with optimizer.step(). The moments and step counts stay
// in the optimizer's own state, so checkpoints and resumes do not depend on which ran.
void fused_adamw_step(torch::optim::AdamW& optimizer);

// Scales the gradients so that their global L2 norm is at most max_norm (like
// torch::nn::utils::clip_grad_norm_, but without reading the norm back to the host).
// Returns the norm before clipping as a 0-dim tensor.
torch::Tensor clip_grad_norm_no_sync(const std::vector<torch::Tensor>& parameters, double max_norm);

// Throws config::ConfigError when the training-step options cannot work together:
// CONFIG_CUDA_GRAPHS=y needs CONFIG_DEVICE=cuda, a CUDA build and CONFIG_KV_PRUNE=n (PrunedKV's
// selection seed and EMA advance on the host).
void check_step_config(const config::Config& config);

// Model FLOPs of one training token (forward + backward), the nanoGPT / llm.c convention:
// 6 N (N: parameters without the position table) + 12 L C T (attention scores and values).
double training_flops_per_token(const model::GPT2Impl& model);

class StepRunner {
 public:
  // AdamW over the model's decayed / undecayed parameter groups with the CONFIG_ options
  // (betas, weight decay, clipping); bf16 autocast when the model is on CUDA. With
  // CONFIG_CUDA_GRAPHS=y throws config::ConfigError where check_step_config does or the model is
  // not on CUDA.
  StepRunner(model::GPT2 model, const config::Config& config, double initial_lr);

  // One optimizer step over micro-batches (inputs and targets int64 [B, T] each, on the model's
  // device) at learning rate `lr`. Returns the mean micro-batch loss, a 0-dim float32 tensor on
  // the device. With CUDA graphs the first kGraphWarmupSteps steps run eagerly, the next one
  // captures the step and every later one replays it; the micro-batch count and shapes must then
  // stay those of the captured step (std::invalid_argument otherwise).
  torch::Tensor step(const std::vector<torch::Tensor>& inputs,
                     const std::vector<torch::Tensor>& targets, double lr);

  // Call after changing which parameters train (e.g. unfreezing RA's reciprocal gates) or after
  // replacing the optimizer's state (the graph holds the moment tensors it captured): the next
  // step captures a new graph. Does nothing without CUDA graphs.
  void invalidate_graph();

  torch::optim::AdamW& optimizer() { return *optimizer_; }
  bool uses_autocast() const { return autocast_; }
  bool uses_cuda_graph() const { return graph_ != nullptr; }
  // Steps that ran as a replay of the captured graph (the capturing step included).
  int64_t graph_replays() const { return graph_replays_; }

  // Eager steps before the capture: lazy initialisations (cuBLAS workspaces, AdamW moments,
  // autograd's device threads) must not happen inside it.
  static constexpr int kGraphWarmupSteps = 3;

 private:
  torch::Tensor eager_step(const std::vector<torch::Tensor>& inputs,
                           const std::vector<torch::Tensor>& targets, double lr);
  torch::Tensor forward_backward(const std::vector<torch::Tensor>& inputs,
                                 const std::vector<torch::Tensor>& targets);
  torch::Tensor graph_step(const std::vector<torch::Tensor>& inputs,
                           const std::vector<torch::Tensor>& targets, double lr);
  void capture_step(const std::vector<torch::Tensor>& inputs,
                    const std::vector<torch::Tensor>& targets);

  model::GPT2 model_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::vector<torch::Tensor> parameters_;
  double grad_clip_;
  bool autocast_;

  // CUDA graph state: the graph, its static inputs and loss, the learning rate and AdamW step
  // counts as device tensors (a host value would be frozen into the graph), and the optimizer
  // states whose host step count follows each replay.
  std::unique_ptr<util::CudaGraph> graph_;
  int eager_steps_ = 0;
  int64_t graph_replays_ = 0;
  std::vector<torch::Tensor> static_inputs_, static_targets_;
  torch::Tensor static_loss_;
  torch::Tensor device_lr_;
  std::vector<torch::Tensor> device_steps_;
  std::vector<torch::optim::AdamWParamState*> stepped_states_;
};

}  // namespace rakv::apps
