// The training step: autocast, no-sync clipping, fused AdamW, optionally one CUDA graph.
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>

#include "rakv/apps/train_step.h"
#include "rakv/detail/optimizer_state_key.h"
#include "rakv/util/autocast.h"

namespace rakv::apps {
namespace {

// The parameter's AdamW state, created (zero moments, step 0) when it has none yet.
[[maybe_unused]] torch::optim::AdamWParamState& adamw_state(torch::optim::AdamW& optimizer, const torch::Tensor& p) {
  auto& state = optimizer.state();
  auto& slot = state[detail::optimizer_state_key(state, p)];
  if (!slot) {
    auto fresh = std::make_unique<torch::optim::AdamWParamState>();
    fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    slot = std::move(fresh);
  }
  return static_cast<torch::optim::AdamWParamState&>(*slot);
}

#if TORCH_VERSION_MAJOR >= 2
// One parameter group's arguments of at::_fused_adamw_, shared by the eager and the captured step.
struct FusedAdamWGroup {
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;

  void add(const torch::Tensor& p, torch::optim::AdamWParamState& state, const torch::Tensor& step) {
    params.push_back(p);
    grads.push_back(p.grad());
    exp_avgs.push_back(state.exp_avg());
    exp_avg_sqs.push_back(state.exp_avg_sq());
    steps.push_back(step);
  }

  // lr: a double (eager) or a 0-dim device tensor (read by a replayed graph).
  template <typename LearningRate>
  void step(const torch::optim::AdamWOptions& options, const LearningRate& lr) const {
    if (params.empty())
      return;
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr,
                      std::get<0>(options.betas()), std::get<1>(options.betas()),
                      options.weight_decay(), options.eps(), /*amsgrad=*/false,
                      /*maximize=*/false);
  }
};
#endif

std::string describe_shapes(const std::vector<torch::Tensor>& tensors) {
  std::ostringstream out;
  out << tensors.size() << " micro-batches";
  if (!tensors.empty())
    out << " of " << tensors.front().sizes();
  return out.str();
}

}  // namespace

void fused_adamw_step(torch::optim::AdamW& optimizer) {
#if TORCH_VERSION_MAJOR >= 2
  bool all_cuda = true;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params())
      all_cuda = all_cuda && p.is_cuda() && p.scalar_type() == torch::kFloat32;
  }
  if (all_cuda) {
    torch::NoGradGuard no_grad;
    for (auto& group : optimizer.param_groups()) {
      const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
      FusedAdamWGroup lists;
      // One step tensor per distinct step count (parameters that started training later differ).
      std::map<int64_t, torch::Tensor> step_tensors;
      for (auto& p : group.params()) {
        if (!p.grad().defined())
          continue;
        auto& s = adamw_state(optimizer, p);
        s.step(s.step() + 1);
        auto it = step_tensors.find(s.step());
        if (it == step_tensors.end()) {
          it = step_tensors
                   .emplace(s.step(), torch::full({}, static_cast<double>(s.step()), p.options()))
                   .first;
        }
        lists.add(p, s, it->second);
      }
      lists.step(options, options.lr());
    }
    return;
  }
#endif
  optimizer.step();
}

torch::Tensor clip_grad_norm_no_sync(const std::vector<torch::Tensor>& parameters,
                                     double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : parameters) {
    if (p.grad().defined())
      grads.push_back(p.grad());
  }
  if (grads.empty())
    return torch::zeros({});
  std::vector<torch::Tensor> norms;
  for (const auto& g : grads)
    norms.push_back(g.norm(2).to(torch::kFloat32));
  const torch::Tensor total = torch::stack(norms).norm(2);
  const torch::Tensor scale = torch::clamp_max(max_norm / (total + 1e-6), 1.0);
  for (auto& g : grads)
    g.mul_(scale.to(g.scalar_type()));
  return total;
}

void check_step_config(const config::Config& cfg) {
  if (!cfg.get_bool("CONFIG_CUDA_GRAPHS"))
    return;
  if (cfg.get_bool("CONFIG_KV_PRUNE")) {
    throw config::ConfigError(
        "CONFIG_CUDA_GRAPHS cannot be combined with CONFIG_KV_PRUNE=y: PrunedKV advances its "
        "selection seed and importance EMA on the host, which a replayed graph would freeze");
  }
  if (cfg.get_string("CONFIG_DEVICE") != "cuda")
    throw config::ConfigError("CONFIG_CUDA_GRAPHS needs CONFIG_DEVICE=cuda");
  if (!util::cuda_graphs_supported() || TORCH_VERSION_MAJOR < 2) {
    throw config::ConfigError(
        "CONFIG_CUDA_GRAPHS needs a build with -DRAKV_CUDA=ON against LibTorch >= 2");
  }
}

double training_flops_per_token(const model::GPT2Impl& model) {
  double parameters = 0;
  for (const auto& p : model.parameters())
    parameters += static_cast<double>(p.numel());
  parameters -= static_cast<double>(model.wpe->weight.numel());
  const auto& c = model.config();
  return 6.0 * parameters + 12.0 * static_cast<double>(c.n_layer * c.n_embd * c.block_size);
}

StepRunner::StepRunner(model::GPT2 model, const config::Config& cfg, double initial_lr)
    : model_(std::move(model)), grad_clip_(cfg.get_float("CONFIG_GRAD_CLIP")) {
  const bool cuda = model_->wte->weight.is_cuda();
  autocast_ = cuda && TORCH_VERSION_MAJOR >= 2;
  const auto adamw = [&](double decay) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(initial_lr)
            .betas({cfg.get_float("CONFIG_BETA1"), cfg.get_float("CONFIG_BETA2")})
            .eps(1e-8)
            .weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(model_->decayed_parameters(), adamw(cfg.get_float("CONFIG_WEIGHT_DECAY")));
  groups.emplace_back(model_->undecayed_parameters(), adamw(0.0));
  optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups),
                                                     torch::optim::AdamWOptions(initial_lr));
  parameters_ = model_->parameters();

  check_step_config(cfg);
  if (cfg.get_bool("CONFIG_CUDA_GRAPHS")) {
    if (!cuda) {
      throw config::ConfigError("CONFIG_CUDA_GRAPHS needs the model on CUDA, got it on " +
                                model_->wte->weight.device().str());
    }
    graph_ = std::make_unique<util::CudaGraph>();
  }
}

torch::Tensor StepRunner::step(const std::vector<torch::Tensor>& inputs,
                               const std::vector<torch::Tensor>& targets, double lr) {
  TORCH_CHECK(!inputs.empty() && inputs.size() == targets.size(),
              "a training step needs matching micro-batches");
  return graph_ ? graph_step(inputs, targets, lr) : eager_step(inputs, targets, lr);
}

void StepRunner::invalidate_graph() {
  if (!graph_)
    return;
  graph_->reset();
  static_inputs_.clear();
  static_targets_.clear();
  static_loss_ = torch::Tensor();
  device_lr_ = torch::Tensor();
  device_steps_.clear();
  stepped_states_.clear();
}

torch::Tensor StepRunner::forward_backward(const std::vector<torch::Tensor>& inputs,
                                           const std::vector<torch::Tensor>& targets) {
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(inputs.front().device()));
  const double micro = static_cast<double>(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    torch::Tensor loss;
    {
      const util::CudaAutocastScope autocast({autocast_, torch::kBFloat16});
      loss = model_->loss(inputs[i], targets[i]) / micro;
    }
    loss.backward();
    loss_sum += loss.detach().to(torch::kFloat32);
  }
  if (grad_clip_ > 0)
    clip_grad_norm_no_sync(parameters_, grad_clip_);
  return loss_sum;
}

torch::Tensor StepRunner::eager_step(const std::vector<torch::Tensor>& inputs,
                                     const std::vector<torch::Tensor>& targets, double lr) {
  for (auto& group : optimizer_->param_groups())
    group.options().set_lr(lr);
  optimizer_->zero_grad();
  torch::Tensor loss = forward_backward(inputs, targets);
  fused_adamw_step(*optimizer_);
  return loss;
}

torch::Tensor StepRunner::graph_step(const std::vector<torch::Tensor>& inputs,
                                     const std::vector<torch::Tensor>& targets, double lr) {
  torch::Tensor loss;
  graph_->on_side_stream([&] {
    if (!graph_->captured() && eager_steps_ < kGraphWarmupSteps) {
      ++eager_steps_;
      loss = eager_step(inputs, targets, lr);
      return;
    }
    if (!graph_->captured()) {
      capture_step(inputs, targets);
    } else {
      bool same_shapes = inputs.size() == static_inputs_.size();
      for (size_t i = 0; same_shapes && i < inputs.size(); ++i) {
        same_shapes = inputs[i].sizes() == static_inputs_[i].sizes() &&
                      targets[i].sizes() == static_targets_[i].sizes();
      }
      if (!same_shapes) {
        throw std::invalid_argument(
            "CUDA graph training step: got " + describe_shapes(inputs) + ", but the graph was "
            "captured for " + describe_shapes(static_inputs_) +
            "; keep the batch shape fixed or set CONFIG_CUDA_GRAPHS=n");
      }
      for (size_t i = 0; i < inputs.size(); ++i) {
        static_inputs_[i].copy_(inputs[i], /*non_blocking=*/true);
        static_targets_[i].copy_(targets[i], /*non_blocking=*/true);
      }
    }
    device_lr_.fill_(lr);
    graph_->replay();
    ++graph_replays_;
    for (auto* state : stepped_states_)
      state->step(state->step() + 1);
    loss = static_loss_;
  });
  // A copy on the caller's stream: the next replay overwrites static_loss_.
  return loss.clone();
}

void StepRunner::capture_step(const std::vector<torch::Tensor>& inputs,
                              const std::vector<torch::Tensor>& targets) {
#if TORCH_VERSION_MAJOR >= 2
  torch::NoGradGuard no_grad;
  static_inputs_.clear();
  static_targets_.clear();
  for (size_t i = 0; i < inputs.size(); ++i) {
    static_inputs_.push_back(inputs[i].clone());
    static_targets_.push_back(targets[i].clone());
  }
  const auto device_scalar = torch::TensorOptions().dtype(torch::kFloat32).device(
      model_->wte->weight.device());
  device_lr_ = torch::zeros({}, device_scalar);
  // Moments exist before the capture (zeros made inside it would be replayed every step), and
  // each distinct step count gets one device counter that the graph advances.
  std::map<int64_t, torch::Tensor> counters;
  std::map<torch::optim::AdamWParamState*, torch::Tensor> counter_of;
  for (auto& group : optimizer_->param_groups()) {
    for (auto& p : group.params()) {
      if (!p.requires_grad())
        continue;
      auto& s = adamw_state(*optimizer_, p);
      auto it = counters.find(s.step());
      if (it == counters.end())
        it = counters.emplace(s.step(), torch::full({}, static_cast<double>(s.step()), device_scalar))
                 .first;
      counter_of[&s] = it->second;
    }
  }
  device_steps_.clear();
  for (auto& [step, counter] : counters)
    device_steps_.push_back(counter);
  // The backward inside the capture allocates every gradient from the graph's memory, so that a
  // replay writes them afresh instead of accumulating onto the previous step's.
  for (auto& p : parameters_)
    p.mutable_grad() = torch::Tensor();
  static_loss_ = torch::Tensor();

  stepped_states_.clear();
  graph_->capture([&] {
    {
      torch::AutoGradMode grad_mode(true);
      static_loss_ = forward_backward(static_inputs_, static_targets_);
    }
    std::vector<FusedAdamWGroup> lists(optimizer_->param_groups().size());
    std::vector<torch::Tensor> advanced;
    for (size_t g = 0; g < lists.size(); ++g) {
      for (auto& p : optimizer_->param_groups()[g].params()) {
        if (!p.grad().defined())
          continue;
        auto& s = adamw_state(*optimizer_, p);
        const torch::Tensor& counter = counter_of.at(&s);
        if (std::none_of(advanced.begin(), advanced.end(),
                         [&](const torch::Tensor& t) { return t.is_same(counter); }))
          advanced.push_back(counter);
        lists[g].add(p, s, counter);
        stepped_states_.push_back(&s);
      }
    }
    for (auto& counter : advanced)
      counter.add_(1);
    for (size_t g = 0; g < lists.size(); ++g) {
      lists[g].step(
          static_cast<const torch::optim::AdamWOptions&>(optimizer_->param_groups()[g].options()),
          device_lr_);
    }
  });
#else
  (void)inputs;
  (void)targets;
  throw std::runtime_error("CUDA graphs of the training step need LibTorch >= 2");
#endif
}

}  // namespace rakv::apps
