// Activation checkpointing of one GPT-2 block as an autograd Function, the reentrant scheme of
// torch.utils.checkpoint: the forward runs without building a graph and saves only the block's
// input; the backward rebuilds the block's graph from that input and runs a nested backward
// through it, which accumulates the parameters' gradients and gives the input's. The recompute
// runs in the CUDA autocast state the forward saw (the backward itself runs outside autocast),
// so it computes the same values with the same kernels.
#include "activation_checkpoint.h"

#include <torch/torch.h>

#include "rakv/util/autocast.h"

namespace rakv::model {
namespace {

// The block, carried to the backward inside the autograd context.
struct BlockHandle : torch::CustomClassHolder {
  explicit BlockHandle(Block b) : block(std::move(b)) {}
  Block block;
};

class CheckpointedBlock : public torch::autograd::Function<CheckpointedBlock> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               Block block) {
    const util::CudaAutocastState autocast = util::current_cuda_autocast();
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = c10::IValue::make_capsule(c10::make_intrusive<BlockHandle>(block));
    ctx->saved_data["autocast"] = autocast.enabled;
    ctx->saved_data["autocast_dtype"] = static_cast<int64_t>(autocast.dtype);
    return block->forward(x);  // Function::apply runs this without recording a graph
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    const auto handle = ctx->saved_data["block"].toCapsule();
    Block& block = static_cast<BlockHandle*>(handle.get())->block;
    torch::Tensor y;
    {
      const torch::AutoGradMode with_grad(true);
      const util::CudaAutocastScope autocast(
          {ctx->saved_data["autocast"].toBool(),
           static_cast<c10::ScalarType>(ctx->saved_data["autocast_dtype"].toInt())});
      y = block->forward(x);
    }
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed_block_forward(Block& block, const torch::Tensor& x) {
  return CheckpointedBlock::apply(x, block);
}

}  // namespace rakv::model
