// Model and training checkpoints in safetensors.
#include <torch/torch.h>

#include <charconv>
#include <sstream>

#include "rakv/detail/optimizer_state_key.h"
#include "rakv/model/checkpoint.h"

namespace rakv::model {
namespace {

std::map<std::string, std::string> metadata_for(const config::Config& config, int64_t step,
                                                const std::string& kind) {
  return {{"format", kModelFormat}, {"kind", kind}, {"config", config.to_text()},
          {"step", std::to_string(step)}};
}

}  // namespace

io::NamedTensors module_state(const torch::nn::Module& module, const std::string& prefix) {
  io::NamedTensors state;
  for (const auto& item : module.named_parameters()) state.emplace_back(prefix + item.key(), item.value());
  for (const auto& item : module.named_buffers()) state.emplace_back(prefix + item.key(), item.value());
  return state;
}

void load_module_state(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                       const std::string& source, const std::string& prefix) {
  std::vector<std::string> problems;
  size_t matched = 0;
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, torch::Tensor& target) {
    auto it = tensors.find(prefix + name);
    if (it == tensors.end()) {
      problems.push_back("missing '" + prefix + name + "'");
      return;
    }
    ++matched;
    if (it->second.sizes() != target.sizes()) {
      std::ostringstream what;
      what << "'" << prefix << name << "' has shape " << it->second.sizes() << ", the model expects "
           << target.sizes();
      problems.push_back(what.str());
      return;
    }
    target.copy_(it->second);
  };
  for (auto& item : module.named_parameters()) load(item.key(), item.value());
  for (auto& item : module.named_buffers()) load(item.key(), item.value());
  size_t expected_in_file = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.rfind(prefix, 0) == 0) ++expected_in_file;
  }
  if (expected_in_file > matched) {
    const auto params = module.named_parameters();
    const auto buffers = module.named_buffers();
    for (const auto& [name, tensor] : tensors) {
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string key = name.substr(prefix.size());
      if (!params.contains(key) && !buffers.contains(key)) problems.push_back("unexpected '" + name + "'");
    }
  }
  if (!problems.empty()) {
    std::string message = source + ": weights do not fit the model: ";
    for (size_t i = 0; i < problems.size() && i < 5; ++i) message += (i ? "; " : "") + problems[i];
    if (problems.size() > 5) message += "; and " + std::to_string(problems.size() - 5) + " more";
    throw std::runtime_error(message);
  }
}

void save_model(const std::string& path, const torch::nn::Module& model, const config::Config& config,
                int64_t step) {
  io::save_safetensors(path, module_state(model), metadata_for(config, step, "model"));
}

CheckpointInfo checkpoint_info(const io::TensorFile& file, const std::string& path) {
  auto field = [&](const char* key) -> const std::string& {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end()) {
      throw std::runtime_error(path + ": not a rakv checkpoint (no '" + key + "' in its metadata)");
    }
    return it->second;
  };
  if (field("format") != kModelFormat) {
    throw std::runtime_error(path + ": unsupported checkpoint format '" + field("format") +
                             "' (expected " + kModelFormat + ")");
  }
  CheckpointInfo info;
  info.kind = field("kind");
  if (info.kind != "model" && info.kind != "training") {
    throw std::runtime_error(path + ": unknown checkpoint kind '" + info.kind + "'");
  }
  info.config = config::Config::parse_text(field("config"), path + " [metadata]");
  const std::string& step = field("step");
  const auto [end, ec] = std::from_chars(step.data(), step.data() + step.size(), info.step);
  if (ec != std::errc() || end != step.data() + step.size() || info.step < 0) {
    throw std::runtime_error(path + ": checkpoint metadata has a malformed step '" + step + "'");
  }
  return info;
}

LoadedModel load_model(const std::string& path) {
  const io::TensorFile file = io::load_safetensors(path);
  const CheckpointInfo info = checkpoint_info(file, path);
  // NaN or Inf weights would only surface later, as garbage text or a sampling error.
  for (const auto& [name, tensor] : file.tensors) {
    if (tensor.is_floating_point() && !torch::isfinite(tensor).all().item<bool>()) {
      throw std::runtime_error(path + ": tensor '" + name +
                               "' holds NaN or Inf values (saved from a diverged run?)");
    }
  }
  LoadedModel loaded;
  loaded.config = info.config;
  loaded.step = info.step;
  loaded.model = GPT2(gpt2_config_from(loaded.config));
  load_module_state(*loaded.model, file.tensors, path, info.kind == "training" ? "model." : "");
  return loaded;
}

io::NamedTensors adamw_state(const torch::optim::AdamW& optimizer, const torch::nn::Module& model) {
  io::NamedTensors out;
  const auto& state = optimizer.state();
  for (const auto& item : model.named_parameters()) {
    auto it = state.find(detail::optimizer_state_key(state, item.value()));
    if (it == state.end()) continue;
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    out.emplace_back("adamw.exp_avg." + item.key(), s.exp_avg());
    out.emplace_back("adamw.exp_avg_sq." + item.key(), s.exp_avg_sq());
    out.emplace_back("adamw.step." + item.key(), torch::tensor(static_cast<int64_t>(s.step())));
  }
  return out;
}

void load_adamw_state(torch::optim::AdamW& optimizer, const torch::nn::Module& model,
                      const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  auto& state = optimizer.state();
  for (const auto& item : model.named_parameters()) {
    auto m = tensors.find("adamw.exp_avg." + item.key());
    auto v = tensors.find("adamw.exp_avg_sq." + item.key());
    auto step = tensors.find("adamw.step." + item.key());
    if (m == tensors.end() && v == tensors.end() && step == tensors.end()) continue;
    if (m == tensors.end() || v == tensors.end() || step == tensors.end() ||
        m->second.sizes() != item.value().sizes() || v->second.sizes() != item.value().sizes() ||
        step->second.numel() != 1) {
      throw std::runtime_error(source + ": optimizer state of '" + item.key() + "' is incomplete or mis-shaped");
    }
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(step->second.item<int64_t>());
    s->exp_avg(m->second.to(item.value().options()).clone());
    s->exp_avg_sq(v->second.to(item.value().options()).clone());
    state[detail::optimizer_state_key(state, item.value())] = std::move(s);
  }
}

void save_training_checkpoint(const std::string& path, const torch::nn::Module& model,
                              const torch::optim::AdamW& optimizer, const config::Config& config,
                              int64_t step) {
  io::NamedTensors tensors = module_state(model, "model.");
  for (auto& entry : adamw_state(optimizer, model)) tensors.push_back(std::move(entry));
  io::save_safetensors(path, tensors, metadata_for(config, step, "training"));
}

}  // namespace rakv::model
