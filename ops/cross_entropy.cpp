// Fused softmax cross-entropy (ops.h, "Language-model loss"): the device-independent checks,
// the CPU kernels (kernels/cpu/cross_entropy.cpp) or, in CUDA builds, ops/cuda, and the autograd
// Function of the mean loss.
//
// Why not torch::nn::functional::cross_entropy: under autocast it casts the bf16 logits to a
// float32 copy and stores their log-softmax for the backward, 3 x the logits' bytes of extra
// memory and about 8 passes over float32 [N, V]; GPT-2's logits are 1.65 GB in bf16 at N = 16384.
// Here the forward reads the logits once and keeps one float per row (lse); the backward reads
// them once more and writes the gradient in their dtype.
#include <torch/torch.h>

#include "rakv/kernels/cross_entropy.h"
#include "rakv/ops.h"
#include "float_dispatch.h"

#if defined(RAKV_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace rakv::ops {
namespace {

using detail::dispatch_float_or_double;

struct CheckedRows {
  torch::Tensor logits;   // [N, columns], last dim contiguous
  torch::Tensor targets;  // [N], contiguous
  int64_t vocab = 0;
};

CheckedRows checked_rows(const torch::Tensor& logits, const torch::Tensor& targets,
                         int64_t vocab_size, const char* op) {
  TORCH_CHECK(logits.defined() && targets.defined(), op, ": logits and targets must be defined");
  TORCH_CHECK(logits.dim() >= 1 && logits.size(-1) >= 1, op,
              ": logits must be [..., columns] with at least one column, got ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kFloat64 || dtype == torch::kHalf ||
                  dtype == torch::kBFloat16,
              op, ": logits must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(targets.scalar_type() == torch::kInt64, op, ": targets must be int64 class ids, got ",
              targets.scalar_type());
  TORCH_CHECK(targets.sizes() == logits.sizes().slice(0, logits.dim() - 1), op, ": targets ",
              targets.sizes(), " must have the logits' leading shape (logits ", logits.sizes(),
              ")");
  TORCH_CHECK(targets.device() == logits.device(), op, ": targets are on ", targets.device(),
              ", logits on ", logits.device());
  TORCH_CHECK(logits.device().is_cpu() || logits.is_cuda(), op,
              ": only CPU and CUDA tensors are supported, got ", logits.device());
  TORCH_CHECK(!(logits.is_cuda() && dtype == torch::kFloat64), op,
              ": float64 logits are supported on the CPU only; use float32 on CUDA");
  const int64_t columns = logits.size(-1);
  TORCH_CHECK(vocab_size <= columns, op, ": vocab_size ", vocab_size, " exceeds the logits' ",
              columns, " columns");
  CheckedRows rows;
  rows.vocab = vocab_size > 0 ? vocab_size : columns;
  rows.logits = logits.reshape({-1, columns});
  if (rows.logits.stride(1) != 1)
    rows.logits = rows.logits.contiguous();
  rows.targets = targets.reshape({-1}).contiguous();
  return rows;
}

// On the CPU every counted target must be a class: one pass over N ids, no host stall to avoid.
void check_targets_cpu(const torch::Tensor& targets, int64_t vocab, int64_t ignore_index,
                       const char* op) {
  const int64_t* t = targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    TORCH_CHECK(t[i] == ignore_index || (t[i] >= 0 && t[i] < vocab), op, ": target ", t[i],
                " at row ", i, " is outside [0, ", vocab, ") and is not the ignore_index ",
                ignore_index);
  }
}

torch::ScalarType cpu_compute_type(torch::ScalarType dtype) {
  return dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

template <typename T>
kernels::CrossEntropyParams<T> cpu_params(const CheckedRows& rows, int64_t ignore_index) {
  kernels::CrossEntropyParams<T> p;
  p.logits = rows.logits.data_ptr<T>();
  p.row_stride = rows.logits.stride(0);
  p.rows = rows.logits.size(0);
  p.columns = rows.logits.size(1);
  p.vocab = rows.vocab;
  p.targets = rows.targets.data_ptr<int64_t>();
  p.ignore_index = ignore_index;
  p.num_threads = kv_kernel_threads();
  return p;
}

// Mean over the counted rows; the gradient is the kernels' backward with g = grad / counted.
class CrossEntropyFunction : public torch::autograd::Function<CrossEntropyFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, int64_t vocab_size,
                               int64_t ignore_index) {
    auto [loss, lse] = cross_entropy_forward(logits, targets, vocab_size, ignore_index);
    const torch::Tensor counted = targets.ne(ignore_index).sum().to(loss.scalar_type());
    ctx->save_for_backward({logits, targets, lse, counted});
    ctx->saved_data["vocab_size"] = vocab_size;
    ctx->saved_data["ignore_index"] = ignore_index;
    return loss.sum() / counted;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    if (!grad_outputs[0].defined() || !ctx->needs_input_grad(0)) {
      return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    const torch::Tensor grad_scale = grad_outputs[0] / saved[3];
    const torch::Tensor grad = cross_entropy_backward(grad_scale, saved[0], saved[1], saved[2],
                                                      ctx->saved_data["vocab_size"].toInt(),
                                                      ctx->saved_data["ignore_index"].toInt());
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> cross_entropy_forward(const torch::Tensor& logits,
                                                               const torch::Tensor& targets,
                                                               int64_t vocab_size,
                                                               int64_t ignore_index) {
  const char* op = "cross_entropy_forward";
  const CheckedRows checked = checked_rows(logits.detach(), targets, vocab_size, op);
#if defined(RAKV_WITH_CUDA)
  if (logits.is_cuda()) {
    return cuda::cross_entropy_forward(checked.logits, checked.targets, checked.vocab,
                                       ignore_index);
  }
#endif
  check_targets_cpu(checked.targets, checked.vocab, ignore_index, op);
  CheckedRows rows = checked;
  rows.logits = checked.logits.to(cpu_compute_type(logits.scalar_type()));
  torch::Tensor loss = torch::empty({rows.logits.size(0)}, rows.logits.options());
  torch::Tensor lse = torch::empty_like(loss);
  dispatch_float_or_double(rows.logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    kernels::CrossEntropyParams<T> p = cpu_params<T>(rows, ignore_index);
    p.loss = loss.data_ptr<T>();
    p.lse = lse.data_ptr<T>();
    kernels::cross_entropy_forward(p);
  });
  return {loss, lse};
}

torch::Tensor cross_entropy_backward(const torch::Tensor& grad_scale, const torch::Tensor& logits,
                                     const torch::Tensor& targets, const torch::Tensor& lse,
                                     int64_t vocab_size, int64_t ignore_index) {
  const char* op = "cross_entropy_backward";
  const CheckedRows checked = checked_rows(logits.detach(), targets, vocab_size, op);
  const auto loss_type = cpu_compute_type(logits.scalar_type());
  TORCH_CHECK(lse.defined() && lse.dim() == 1 && lse.size(0) == checked.logits.size(0) &&
                  lse.scalar_type() == loss_type && lse.device() == logits.device(),
              op, ": lse must be the forward's ", loss_type, " [", checked.logits.size(0), "] on ",
              logits.device(), ", got ", lse.scalar_type(), " ", lse.sizes(), " on ", lse.device());
  TORCH_CHECK(
      grad_scale.defined() && grad_scale.numel() == 1 && grad_scale.device() == logits.device(), op,
      ": grad_scale must be one value on ", logits.device());
#if defined(RAKV_WITH_CUDA)
  if (logits.is_cuda()) {
    return cuda::cross_entropy_backward(grad_scale, checked.logits, checked.targets,
                                        lse.contiguous(), checked.vocab, ignore_index)
        .view(logits.sizes());
  }
#endif
  check_targets_cpu(checked.targets, checked.vocab, ignore_index, op);
  CheckedRows rows = checked;
  rows.logits = checked.logits.to(loss_type);
  const torch::Tensor lse_rows = lse.contiguous();
  torch::Tensor grad =
      torch::empty({rows.logits.size(0), rows.logits.size(1)}, rows.logits.options());
  dispatch_float_or_double(loss_type, [&](auto tag) {
    using T = decltype(tag);
    kernels::CrossEntropyParams<T> p = cpu_params<T>(rows, ignore_index);
    p.lse = lse_rows.data_ptr<T>();
    p.grad_scale = grad_scale.item<T>();
    p.grad_logits = grad.data_ptr<T>();
    p.grad_row_stride = grad.stride(0);
    kernels::cross_entropy_backward(p);
  });
  return grad.to(logits.scalar_type()).view(logits.sizes());
}

torch::Tensor cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                 int64_t vocab_size, int64_t ignore_index) {
  return CrossEntropyFunction::apply(logits, targets, vocab_size, ignore_index);
}

}  // namespace rakv::ops
