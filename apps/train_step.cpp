// The training step: autocast, no-sync clipping, fused AdamW.
#include <torch/torch.h>

#include <map>

#include "rakv/apps/train_step.h"
#include "rakv/detail/optimizer_state_key.h"
#include "rakv/util/autocast.h"

namespace rakv::apps {

void fused_adamw_step(torch::optim::AdamW& optimizer) {
#if TORCH_VERSION_MAJOR >= 2
  bool all_cuda = true;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params())
      all_cuda = all_cuda && p.is_cuda() && p.scalar_type() == torch::kFloat32;
  }
  if (all_cuda) {
    torch::NoGradGuard no_grad;
    auto& state = optimizer.state();
    for (auto& group : optimizer.param_groups()) {
      const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
      std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs;
      std::vector<torch::Tensor> steps;
      // One step tensor per distinct step count (parameters that started training later differ).
      std::map<int64_t, torch::Tensor> step_tensors;
      for (auto& p : group.params()) {
        if (!p.grad().defined())
          continue;
        auto& slot = state[detail::optimizer_state_key(state, p)];
        if (!slot) {
          auto fresh = std::make_unique<torch::optim::AdamWParamState>();
          fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          slot = std::move(fresh);
        }
        auto& s = static_cast<torch::optim::AdamWParamState&>(*slot);
        s.step(s.step() + 1);
        auto it = step_tensors.find(s.step());
        if (it == step_tensors.end()) {
          it = step_tensors
                   .emplace(s.step(), torch::full({}, static_cast<double>(s.step()), p.options()))
                   .first;
        }
        params.push_back(p);
        grads.push_back(p.grad());
        exp_avgs.push_back(s.exp_avg());
        exp_avg_sqs.push_back(s.exp_avg_sq());
        steps.push_back(it->second);
      }
      if (params.empty())
        continue;
      at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps,
                        options.lr(), std::get<0>(options.betas()), std::get<1>(options.betas()),
                        options.weight_decay(), options.eps(), /*amsgrad=*/false,
                        /*maximize=*/false);
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
}

torch::Tensor StepRunner::step(const std::vector<torch::Tensor>& inputs,
                               const std::vector<torch::Tensor>& targets, double lr) {
  TORCH_CHECK(!inputs.empty() && inputs.size() == targets.size(),
              "a training step needs matching micro-batches");
  for (auto& group : optimizer_->param_groups())
    group.options().set_lr(lr);
  optimizer_->zero_grad();
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
  fused_adamw_step(*optimizer_);
  return loss_sum;
}

}  // namespace rakv::apps
