// Monotone per-feature splines (KVSplice, SPEC §4): argument checks, the KVSplice
// parameterisation of the knot outputs, the CPU dispatch and the autograd Function that makes the
// spline and its inverse differentiable in their input and knot outputs.
#include <torch/torch.h>

#include "rakv/kernels/spline.h"
#include "rakv/ops.h"
#include "float_dispatch.h"

namespace rakv::ops {
namespace {

using detail::dispatch_float_or_double;

using rakv::kernels::SplineDirection;
using rakv::kernels::SplineParams;

const char* op_name(bool inverse) {
  return inverse ? "monotone_spline_inverse" : "monotone_spline";
}

template <typename T>
void check_table_rows(const torch::Tensor& table, const char* name, const char* op) {
  const int64_t k = table.size(1);
  const T* data = table.data_ptr<T>();
  for (int64_t d = 0; d < table.size(0); ++d) {
    const T* row = data + d * k;
    for (int64_t j = 0; j < k; ++j) {
      TORCH_CHECK(std::isfinite(row[j]), op, ": ", name, "[", d, ", ", j, "] is not finite (",
                  row[j], ")");
      TORCH_CHECK(j == 0 || row[j] > row[j - 1], op, ": ", name, "[", d,
                  "] must be strictly increasing, but entry ", j, " (", row[j],
                  ") is not above entry ", j - 1, " (", row[j - 1], ")");
    }
  }
}

// knots and values: [D, K], K >= 2, float32 or float64 on the CPU, finite and strictly increasing
// along K. Returns them contiguous.
std::pair<torch::Tensor, torch::Tensor> checked_tables(const torch::Tensor& knots,
                                                       const torch::Tensor& values,
                                                       const char* op) {
  TORCH_CHECK(knots.dim() == 2 && values.sizes() == knots.sizes(), op,
              ": knots and values must both be [D, K], got ", knots.sizes(), " and ",
              values.sizes());
  TORCH_CHECK(knots.size(1) >= 2, op,
              ": a spline needs K >= 2 knots per feature, got K = ", knots.size(1));
  TORCH_CHECK(knots.scalar_type() == torch::kFloat32 || knots.scalar_type() == torch::kFloat64, op,
              ": knots must be float32 or float64, got ", knots.scalar_type());
  TORCH_CHECK(values.scalar_type() == knots.scalar_type(), op,
              ": knots and values must have one dtype, got ", knots.scalar_type(), " and ",
              values.scalar_type());
  TORCH_CHECK(knots.device().is_cpu() && values.device().is_cpu(), op,
              ": only CPU tensors are supported, got knots on ", knots.device(), " and values on ",
              values.device());
  torch::Tensor k = knots.detach().contiguous();
  torch::Tensor v = values.detach().contiguous();
  dispatch_float_or_double(k.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    check_table_rows<T>(k, "knots", op);
    check_table_rows<T>(v, "values", op);
  });
  return {k, v};
}

// x: [..., D] with the tables' dtype on the CPU. Returns it as [N, D] rows with a contiguous
// last dim (a view where possible).
torch::Tensor checked_rows(const torch::Tensor& x, const torch::Tensor& knots, const char* name,
                           const char* op) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == knots.size(0), op, ": ", name, " must be [..., ",
              knots.size(0), "] to match the tables' D, got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == knots.scalar_type(), op, ": ", name,
              " must have the tables' dtype ", knots.scalar_type(), ", got ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu(), op, ": only CPU tensors are supported, got ", name, " on ",
              x.device());
  torch::Tensor rows = x.detach().reshape({-1, knots.size(0)});
  if (rows.size(1) > 1 && rows.stride(1) != 1) {
    rows = rows.contiguous();
  }
  return rows;
}

template <typename T>
SplineParams<T> table_params(const torch::Tensor& knots, const torch::Tensor& values,
                             const torch::Tensor& rows, bool inverse) {
  SplineParams<T> p;
  p.knots = knots.data_ptr<T>();
  p.values = values.data_ptr<T>();
  p.features = knots.size(0);
  p.num_knots = knots.size(1);
  p.direction = inverse ? SplineDirection::kInverse : SplineDirection::kForward;
  p.rows = rows.size(0);
  p.input = rows.data_ptr<T>();
  p.input_row_stride = rows.stride(0);
  p.num_threads = at::get_num_threads();
  return p;
}

std::tuple<torch::Tensor, torch::Tensor> spline_backward_impl(
    const torch::Tensor& grad_output, const torch::Tensor& input, const torch::Tensor& knots,
    const torch::Tensor& values, bool inverse, bool want_input, bool want_values) {
  const char* op = op_name(inverse);
  const auto [k, v] = checked_tables(knots, values, op);
  const torch::Tensor rows = checked_rows(input, k, "input", op);
  TORCH_CHECK(grad_output.sizes() == input.sizes(), op, ": grad_output must have the input's ",
              "shape ", input.sizes(), ", got ", grad_output.sizes());
  const torch::Tensor grad_rows = checked_rows(grad_output, k, "grad_output", op);
  torch::Tensor grad_input = want_input ? torch::empty_like(rows) : torch::Tensor();
  torch::Tensor grad_values = want_values ? torch::empty_like(v) : torch::Tensor();
  dispatch_float_or_double(k.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    SplineParams<T> p = table_params<T>(k, v, rows, inverse);
    p.grad_output = grad_rows.data_ptr<T>();
    p.grad_output_row_stride = grad_rows.stride(0);
    if (want_input) {
      p.grad_input = grad_input.data_ptr<T>();
      p.grad_input_row_stride = grad_input.stride(0);
    }
    if (want_values) {
      p.grad_values = grad_values.data_ptr<T>();
    }
    rakv::kernels::spline_backward(p);
  });
  if (want_input) {
    grad_input = grad_input.view(input.sizes());
  }
  return {grad_input, grad_values};
}

// g (inverse = false) or g^-1 (inverse = true), differentiable in the input and the knot values.
class SplineFunction : public torch::autograd::Function<SplineFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& knots, const torch::Tensor& values,
                               bool inverse) {
    ctx->save_for_backward({input, knots, values});
    ctx->saved_data["inverse"] = inverse;
    return monotone_spline_eval(input, knots, values, inverse);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const bool want_input = ctx->needs_input_grad(0);
    const bool want_values = ctx->needs_input_grad(2);
    if (!grad_outputs[0].defined() || (!want_input && !want_values)) {
      return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    auto [grad_input, grad_values] =
        spline_backward_impl(grad_outputs[0], saved[0], saved[1], saved[2],
                             ctx->saved_data["inverse"].toBool(), want_input, want_values);
    // The knots are the spline's fixed coordinates: no gradient.
    return {grad_input, torch::Tensor(), grad_values, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor monotone_spline_eval(const torch::Tensor& input, const torch::Tensor& knots,
                                   const torch::Tensor& values, bool inverse) {
  const char* op = op_name(inverse);
  const auto [k, v] = checked_tables(knots, values, op);
  const torch::Tensor rows = checked_rows(input, k, "input", op);
  torch::Tensor output = torch::empty_like(rows, torch::MemoryFormat::Contiguous);
  int64_t nonfinite = 0;
  dispatch_float_or_double(k.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    SplineParams<T> p = table_params<T>(k, v, rows, inverse);
    p.output = output.data_ptr<T>();
    p.output_row_stride = output.stride(0);
    nonfinite = rakv::kernels::spline_apply(p);
  });
  TORCH_CHECK(nonfinite == 0, op, ": the input holds ", nonfinite, " non-finite value",
              nonfinite == 1 ? "" : "s", " (NaN or Inf) among ", input.numel());
  return output.view(input.sizes());
}

std::tuple<torch::Tensor, torch::Tensor> monotone_spline_backward(const torch::Tensor& grad_output,
                                                                  const torch::Tensor& input,
                                                                  const torch::Tensor& knots,
                                                                  const torch::Tensor& values,
                                                                  bool inverse) {
  return spline_backward_impl(grad_output, input, knots, values, inverse, true, true);
}

torch::Tensor monotone_spline(const torch::Tensor& x, const torch::Tensor& knots,
                              const torch::Tensor& values) {
  return SplineFunction::apply(x, knots, values, false);
}

torch::Tensor monotone_spline_inverse(const torch::Tensor& y, const torch::Tensor& knots,
                                      const torch::Tensor& values) {
  return SplineFunction::apply(y, knots, values, true);
}

torch::Tensor monotone_spline_knot_values(const torch::Tensor& knots, const torch::Tensor& delta,
                                          const torch::Tensor& scale_raw,
                                          const torch::Tensor& shift) {
  const char* op = "monotone_spline_knot_values";
  TORCH_CHECK(knots.dim() == 2 && knots.size(1) >= 2, op,
              ": knots must be [D, K] with K >= 2, got ", knots.sizes());
  const int64_t d = knots.size(0), k = knots.size(1);
  TORCH_CHECK(delta.dim() == 2 && delta.size(0) == d && delta.size(1) == k - 1, op,
              ": delta must be [D, K - 1] = [", d, ", ", k - 1, "], got ", delta.sizes());
  TORCH_CHECK(scale_raw.dim() == 1 && scale_raw.size(0) == d && shift.sizes() == scale_raw.sizes(),
              op, ": scale_raw and shift must be [D] = [", d, "], got ", scale_raw.sizes(), " and ",
              shift.sizes());
  TORCH_CHECK(knots.is_floating_point() && delta.scalar_type() == knots.scalar_type() &&
                  scale_raw.scalar_type() == knots.scalar_type() &&
                  shift.scalar_type() == knots.scalar_type(),
              op, ": knots, delta, scale_raw and shift must share one floating dtype, got ",
              knots.scalar_type(), ", ", delta.scalar_type(), ", ", scale_raw.scalar_type(),
              " and ", shift.scalar_type());
  const torch::Tensor start = knots.narrow(1, 0, 1);
  const torch::Tensor widths = knots.narrow(1, 1, k - 1) - knots.narrow(1, 0, k - 1);
  const torch::Tensor slopes = torch::softplus(delta) + 1e-4;
  // Normalised so that the width-weighted mean slope is 1: the outputs span the knots' range.
  const torch::Tensor normalised = slopes * (widths.sum(1, true) / (widths * slopes).sum(1, true));
  const torch::Tensor outputs =
      torch::cat({start, start + torch::cumsum(widths * normalised, 1)}, 1);
  const torch::Tensor scale = torch::softplus(scale_raw) + 1e-3;
  return outputs * scale.unsqueeze(1) + shift.unsqueeze(1);
}

}  // namespace rakv::ops
