// Reciprocal MLP: the literal formula and the fused form that costs what a plain MLP costs.
#include <torch/torch.h>

#include "rakv/nn/reciprocal_mlp.h"
#include "rakv/ops.h"

namespace rakv::nn {

namespace F = torch::nn::functional;

RMLPImpl parse_rmlp_impl(const std::string& name) {
  if (name == "literal") return RMLPImpl::kLiteral;
  if (name == "fused") return RMLPImpl::kFused;
  TORCH_CHECK(false, "unknown R-MLP implementation '", name, "' (expected literal or fused)");
}

std::string to_string(RMLPImpl impl) { return impl == RMLPImpl::kLiteral ? "literal" : "fused"; }

ReciprocalMLPImpl::ReciprocalMLPImpl(const ReciprocalMLPOptions& options) : options_(options) {
  TORCH_CHECK(options.n_embd > 0 && options.expansion > 0, "R-MLP needs positive n_embd and expansion");
  hidden_ = options.expansion * options.n_embd;
  const int64_t r = options.reciprocal_units;
  TORCH_CHECK(r > 0 && r < hidden_, "R-MLP needs 0 < R_ff < hidden width, got R_ff = ", r,
              " with hidden width ", hidden_, " (", options.expansion, " x ", options.n_embd, ")");
  hidden_std_ = hidden_ - r;
  TORCH_CHECK(!options.tied || r <= hidden_std_, "tied R-MLP reuses the first R_ff rows of the ",
              "standard up-projection, so R_ff (", r, ") must be <= D_ff - R_ff (", hidden_std_, ")");
  TORCH_CHECK(options.dropout >= 0 && options.dropout < 1, "dropout must be in [0, 1), got ",
              options.dropout);
  const int64_t up_rows = options.tied ? hidden_std_ : hidden_;
  c_fc = register_module("c_fc", torch::nn::Linear(torch::nn::LinearOptions(options.n_embd, up_rows).bias(false)));
  c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(hidden_, options.n_embd).bias(false)));
  w_std = register_parameter("w_std", torch::full({1}, 0.9));
  w_rec = register_parameter("w_rec", torch::full({1}, 0.1));
  if (options.gate_alpha) gate_alpha = register_parameter("gate_alpha", torch::full({1}, 0.1));
  if (options.mixer) mixer = register_parameter("mixer", torch::eye(r));
  coupling_scale = register_buffer("coupling_scale", torch::ones({1}));
}

void ReciprocalMLPImpl::set_coupling_scale(double scale) {
  torch::NoGradGuard no_grad;
  coupling_scale.fill_(std::clamp(scale, 0.0, 1.0));
}

double ReciprocalMLPImpl::coupling_scale_value() const { return coupling_scale.item<double>(); }

torch::Tensor ReciprocalMLPImpl::reciprocal_scale() const {
  torch::Tensor scale = w_rec * coupling_scale;
  if (options_.gate_alpha) scale = scale * gate_alpha;
  return scale;
}

torch::Tensor ReciprocalMLPImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.size(-1) == options_.n_embd, "R-MLP expects x [..., ", options_.n_embd, "], got ",
              x.sizes());
  const torch::Tensor y = options_.impl == RMLPImpl::kFused ? forward_fused(x) : forward_literal(x);
  return torch::dropout(y, options_.dropout, is_training());
}

torch::Tensor ReciprocalMLPImpl::forward_literal(const torch::Tensor& x) {
  const int64_t r = options_.reciprocal_units;
  const torch::Tensor up_std = c_fc->weight.narrow(0, 0, hidden_std_);
  const torch::Tensor up_low =
      options_.tied ? c_fc->weight.narrow(0, 0, r) : c_fc->weight.narrow(0, hidden_std_, r);
  const torch::Tensor h_std = torch::gelu(F::linear(x, up_std));
  torch::Tensor h_low = torch::gelu(F::linear(x, up_low));
  if (options_.mixer) h_low = F::linear(h_low, mixer);
  if (options_.gate_alpha) h_low = gate_alpha * h_low;
  const torch::Tensor h = torch::cat({w_std * h_std, w_rec * coupling_scale * h_low}, -1);
  return c_proj(h);
}

torch::Tensor ReciprocalMLPImpl::forward_fused(const torch::Tensor& x) {
  const int64_t r = options_.reciprocal_units;
  const torch::Tensor h = torch::gelu(F::linear(x, c_fc->weight));
  if (!options_.tied && !options_.mixer) {
    // Both gates folded into `down` by one op (one kernel each way on CUDA).
    return F::linear(h, ops::fold_reciprocal_mlp_gates(c_proj->weight, w_std, reciprocal_scale(),
                                                       hidden_std_));
  }
  const torch::Tensor down_std = c_proj->weight.narrow(1, 0, hidden_std_) * w_std;
  torch::Tensor down_low = c_proj->weight.narrow(1, hidden_std_, r) * reciprocal_scale();
  // (h_low mixer^T) down_low^T = h_low (down_low mixer)^T: the mixer folds into `down` too.
  if (options_.mixer) down_low = torch::matmul(down_low, mixer);
  if (!options_.tied) {
    return F::linear(h, torch::cat({down_std, down_low}, 1));
  }
  // Tied: the reciprocal units are the first R_ff standard units, so their down columns add
  // onto those of the standard part and one [C, D_ff_std] weight serves both.
  const torch::Tensor down =
      torch::cat({down_std.narrow(1, 0, r) + down_low, down_std.narrow(1, r, hidden_std_ - r)}, 1);
  return F::linear(h, down);
}

}  // namespace rakv::nn
