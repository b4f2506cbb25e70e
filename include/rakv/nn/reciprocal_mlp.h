// Reciprocal MLP (SPEC §2). The hidden layer of width D_ff = expansion * C is split into a
// standard part (D_ff_std = D_ff - R_ff units) and a reciprocal part (R_ff units):
//   h_std = GELU(x up_std^T), h_low = GELU(x up_low^T) [. mixer^T] [* gate_alpha]
//   y = [w_std h_std | w_rec c h_low] down^T          (c: the coupling scale buffer, default 1)
// up_std and up_low are the rows of one weight `c_fc` ([D_ff, C]; [D_ff_std, C] when tied, where
// up_low is up_std's first R_ff rows).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <string>

namespace rakv::nn {

enum class RMLPImpl {
  kLiteral,  // two up GEMMs, gated halves concatenated, then down: the formula as written
  kFused,    // one up GEMM into one buffer; gates, gate_alpha, coupling and mixer folded into
             // the columns of `down` (O(C * D_ff) per step): the cost of a plain MLP
};
RMLPImpl parse_rmlp_impl(const std::string& name);
std::string to_string(RMLPImpl impl);

struct ReciprocalMLPOptions {
  int64_t n_embd = 128;
  int64_t expansion = 4;
  int64_t reciprocal_units = 64;  // R_ff, 0 < R_ff < D_ff (R_ff <= D_ff_std when tied)
  bool mixer = false;
  bool gate_alpha = false;
  bool tied = false;
  double dropout = 0.0;
  RMLPImpl impl = RMLPImpl::kFused;
};

class ReciprocalMLPImpl : public torch::nn::Module {
 public:
  explicit ReciprocalMLPImpl(const ReciprocalMLPOptions& options);
  // x: [..., C] -> [..., C].
  torch::Tensor forward(const torch::Tensor& x);

  // Sets the coupling scale (clamped to [0, 1]) that multiplies the reciprocal half; kept for
  // schedules that ramp the reciprocal path in.
  void set_coupling_scale(double scale);
  double coupling_scale_value() const;

  void set_impl(RMLPImpl impl) { options_.impl = impl; }
  const ReciprocalMLPOptions& options() const { return options_; }

  torch::nn::Linear c_fc{nullptr};    // [D_ff, C] (tied: [D_ff_std, C])
  torch::nn::Linear c_proj{nullptr};  // [C, D_ff]
  torch::Tensor w_std;                // [1], init 0.9
  torch::Tensor w_rec;                // [1], init 0.1
  torch::Tensor gate_alpha;           // [1], init 0.1 (when enabled)
  torch::Tensor mixer;                // [R_ff, R_ff], init identity (when enabled)
  torch::Tensor coupling_scale;       // buffer [1], in [0, 1]

 private:
  torch::Tensor forward_literal(const torch::Tensor& x);
  torch::Tensor forward_fused(const torch::Tensor& x);
  // Scale on the reciprocal half: w_rec * coupling [* gate_alpha], shape [1].
  torch::Tensor reciprocal_scale() const;

  ReciprocalMLPOptions options_;
  int64_t hidden_;      // D_ff
  int64_t hidden_std_;  // D_ff_std
};
TORCH_MODULE(ReciprocalMLP);

}  // namespace rakv::nn
