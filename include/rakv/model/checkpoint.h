// GPT-2 checkpoints as safetensors files. Every file carries its full configuration in the
// metadata, so `rakv generate --checkpoint FILE` needs nothing else.
//   model.safetensors       weights and buffers (for inference)
//   checkpoint.safetensors  weights + AdamW moments and steps (to resume training)
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include <map>
#include <string>

#include "rakv/config.h"
#include "rakv/io/safetensors.h"
#include "rakv/model/gpt2.h"

namespace rakv::model {

inline constexpr const char* kModelFormat = "rakv-gpt2/1";

// Every parameter and buffer of `module` under its dotted name.
io::NamedTensors module_state(const torch::nn::Module& module, const std::string& prefix = "");

// Copies `tensors[prefix + name]` into each parameter and buffer of `module`. Throws a
// std::runtime_error listing missing, unexpected or mis-shaped entries; `source` names the file.
void load_module_state(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                       const std::string& source, const std::string& prefix = "");

// Writes model.safetensors: weights, the configuration and the step, atomically.
void save_model(const std::string& path, const torch::nn::Module& model,
                const config::Config& config, int64_t step);

struct LoadedModel {
  GPT2 model{nullptr};
  config::Config config;
  int64_t step = 0;
};

struct CheckpointInfo {
  config::Config config;
  int64_t step = 0;
  std::string kind;  // "model" or "training"
};

// Validates and parses the metadata of a rakv checkpoint file read from `path`.
CheckpointInfo checkpoint_info(const io::TensorFile& file, const std::string& path);

// Reads a model (or training checkpoint) file, rebuilds the GPT-2 of its configuration on the
// CPU and loads the weights. Throws with a readable message for a missing, truncated or foreign
// file, or weights that do not fit the configuration.
LoadedModel load_model(const std::string& path);

// AdamW moments and step counts of every parameter of `model` that has optimizer state.
io::NamedTensors adamw_state(const torch::optim::AdamW& optimizer, const torch::nn::Module& model);
// Restores what adamw_state saved (entries for parameters without state are absent).
void load_adamw_state(torch::optim::AdamW& optimizer, const torch::nn::Module& model,
                      const std::map<std::string, torch::Tensor>& tensors, const std::string& source);

// Writes checkpoint.safetensors: "model." weights plus "adamw." optimizer state.
void save_training_checkpoint(const std::string& path, const torch::nn::Module& model,
                              const torch::optim::AdamW& optimizer, const config::Config& config,
                              int64_t step);

}  // namespace rakv::model
