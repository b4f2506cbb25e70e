// CUDA ops against the CPU ops and float64 references on random inputs: selection, importance,
// RA and PrunedKV attention forward and backward, and a bf16 training step. Skipped on machines
// without a CUDA device (run by scripts/device.sh on the GPU).
#include <torch/torch.h>

#if TORCH_VERSION_MAJOR >= 2
#include <ATen/autocast_mode.h>
#endif

#include "rakv/apps/topk_bench.h"
#include "rakv/apps/train_step.h"
#include "rakv/detail/optimizer_state_key.h"
#include "rakv/model/gpt2.h"
#include "rakv/nn/pruned_kv_attention.h"
#include "rakv/nn/reciprocal_attention.h"
#include "rakv/ops.h"
#include "rakv/util/autocast.h"
#include "test_helpers.h"

namespace {

using rakv::testing::relative_error;

#define SKIP_WITHOUT_CUDA()             \
  do {                                  \
    if (!torch::cuda::is_available()) { \
      GTEST_SKIP() << "no CUDA device"; \
    }                                   \
  } while (false)

const torch::Device kCuda(torch::kCUDA);

// Gives `to` the parameter values of `from` (every layer draws its own random init).
template <typename ModuleHolder>
void copy_parameters(const ModuleHolder& from, ModuleHolder& to) {
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> source = from->parameters();
  const std::vector<torch::Tensor> target = to->parameters();
  for (size_t i = 0; i < source.size(); ++i)
    target[i].copy_(source[i]);
}

// A small PrunedKV layer that prunes from the first chunks on.
rakv::nn::PrunedKVAttentionOptions pruned_options(rakv::nn::PruneMode mode, int64_t n_embd,
                                                  int64_t interval) {
  rakv::nn::PrunedKVAttentionOptions options;
  options.n_embd = n_embd;
  options.n_head = 2;
  options.mode = mode;
  options.k_min = 8;
  options.recency = 8;
  options.interval = interval;
  return options;
}

// Importance rows with ties: values drawn from a few levels, plus noise on some rows.
torch::Tensor tied_importance(int64_t b, int64_t h, int64_t t) {
  torch::Tensor levels = torch::randint(0, 7, {b, h, t}).to(torch::kFloat32) / 7.0 + 0.01;
  return levels.contiguous();
}

TEST(CudaOps, ExactSelectionEqualsTheCpuSelection) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(71);
  for (int64_t t : {1, 7, 100, 1000, 4097, 16384, 40000}) {
    for (bool ties : {false, true}) {
      const torch::Tensor importance =
          ties ? tied_importance(2, 3, t) : torch::rand({2, 3, t}) + 1e-6;
      for (int64_t k :
           {int64_t{1}, std::min<int64_t>(t, 64), rakv::ops::kv_keep_count(t, 0.38, 64), t}) {
        const torch::Tensor cpu =
            rakv::ops::kv_select(importance, k, 64, rakv::ops::TopkMethod::kExact, 0.02, 1);
        const torch::Tensor gpu = rakv::ops::kv_select(importance.to(kCuda), k, 64,
                                                       rakv::ops::TopkMethod::kExact, 0.02, 1);
        ASSERT_TRUE(gpu.is_cuda());
        EXPECT_TRUE(torch::equal(gpu.cpu(), cpu)) << "T=" << t << " k=" << k << " ties=" << ties;
      }
    }
  }
}

TEST(CudaOps, SamplingSelectionKeepsTheCountTheRecencyAndHighRecall) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(72);
  for (int64_t t : {300, 8192, 65536}) {
    const torch::Tensor importance = (torch::rand({4, 3, t}) + 1e-6).to(kCuda);
    const int64_t k = rakv::ops::kv_keep_count(t, 0.38, 64);
    const torch::Tensor sampled =
        rakv::ops::kv_select(importance, k, 64, rakv::ops::TopkMethod::kSampling, 0.02, 5).cpu();
    const torch::Tensor exact =
        rakv::ops::kv_select(importance, k, 64, rakv::ops::TopkMethod::kExact, 0.02, 5).cpu();
    EXPECT_EQ(sampled.size(2), k);
    EXPECT_TRUE((sampled.narrow(2, 1, k - 1) > sampled.narrow(2, 0, k - 1))
                    .all()
                    .item<bool>());  // distinct, ascending
    EXPECT_TRUE(
        (sampled.narrow(2, k - 64, 64) == torch::arange(t - 64, t)).all().item<bool>());  // recency
    torch::Tensor marks = torch::zeros({4, 3, t}, torch::kBool).scatter_(2, exact, true);
    const double recall = marks.gather(2, sampled).to(torch::kFloat64).mean().item<double>();
    if (t >= 8192) {
      EXPECT_GE(recall, 0.9) << "T=" << t;
    }
  }
}

// The shapes PrunedKV asks for while training at T = 16384 (B = 1, H = 12, chunks of 512): every
// chunk start's prefix, the model's budget, recency 64.
TEST(CudaOps, ExactSelectionOnEveryPrunedKVPrefixOfALongSequence) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(80);
  for (int64_t s = 512; s < 16384; s += 512) {
    const torch::Tensor importance = torch::rand({1, 12, s}).pow(4) + 1e-6;
    const int64_t k = rakv::ops::kv_keep_count(s, 0.381966, 64);
    const torch::Tensor cpu =
        rakv::ops::kv_select(importance, k, 64, rakv::ops::TopkMethod::kExact, 0.02, 1);
    const torch::Tensor gpu =
        rakv::ops::kv_select(importance.to(kCuda), k, 64, rakv::ops::TopkMethod::kExact, 0.02, 1);
    EXPECT_TRUE(torch::equal(gpu.cpu(), cpu)) << "prefix " << s << " k=" << k;
  }
}

// Repeated calls on one input (as a benchmark makes them) must keep giving the CPU's selection:
// the audit saw exact selections differ after back-to-back calls.
TEST(CudaOps, ExactSelectionIsTheSameOnEveryRepeatedCall) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(83);
  for (int64_t t : {1024, 4096, 65536}) {
    const torch::Tensor importance = torch::rand({8, 12, t}) + 1e-6;
    const int64_t k = rakv::ops::kv_keep_count(t, 0.38, 64);
    const torch::Tensor cpu =
        rakv::ops::kv_select(importance, k, 64, rakv::ops::TopkMethod::kExact, 0.02, 1);
    const torch::Tensor on_gpu = importance.to(kCuda);
    // What the benchmark does before: a torch.topk whose freed outputs the selection may reuse.
    torch::topk(on_gpu, k, -1);
    for (int call = 0; call < 25; ++call) {
      const torch::Tensor gpu =
          rakv::ops::kv_select(on_gpu, k, 64, rakv::ops::TopkMethod::kExact, 0.02, 1).cpu();
      const torch::Tensor differ = gpu != cpu;
      const int64_t count = differ.sum().item<int64_t>();
      if (count > 0) {
        const torch::Tensor at = differ.nonzero()[0];
        const int64_t b = at[0].item<int64_t>(), h = at[1].item<int64_t>(),
                      j = at[2].item<int64_t>();
        ADD_FAILURE()
            << "T=" << t << " call " << call << ": " << count << " entries differ; first at [" << b
            << ", " << h << ", " << j << "]: gpu " << gpu[b][h][j].item<int64_t>() << ", cpu "
            << cpu[b][h][j].item<int64_t>() << " (row ascending: "
            << (gpu[b][h].narrow(0, 1, k - 1) > gpu[b][h].narrow(0, 0, k - 1)).all().item<bool>()
            << ")";
        break;
      }
    }
  }
}

// Python calls torch.ops.rakv.<name> on CUDA tensors through the dispatcher's CUDA key.
TEST(CudaOps, SelectionAndImportanceAreRegisteredForCuda) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(84);
  const torch::Tensor importance = (torch::rand({2, 2, 300}) + 0.1).to(kCuda);
  const auto select = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("rakv::kv_select", "")
                          .typed<torch::Tensor(const torch::Tensor&, int64_t, int64_t,
                                               c10::string_view, double, int64_t)>();
  EXPECT_TRUE(torch::equal(
      select.call(importance, 120, 64, "exact", 0.02, 0),
      rakv::ops::kv_select(importance, 120, 64, rakv::ops::TopkMethod::kExact, 0.02, 0)));
  const torch::Tensor q =
      torch::randn({1, 2, 77, 64}, torch::TensorOptions().dtype(torch::kHalf).device(kCuda));
  const torch::Tensor k =
      torch::randn({1, 2, 77, 64}, torch::TensorOptions().dtype(torch::kHalf).device(kCuda));
  const auto importance_op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("rakv::kv_importance", "")
                                 .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                      bool, int64_t, double)>();
  // The column pass may sum in any order (atomics): equal up to float32 rounding.
  EXPECT_LT(relative_error(importance_op.call(q, k, true, 0, 0.0),
                           rakv::ops::kv_importance(q, k, true, 0, 0.0)),
            1e-5);
}

TEST(CudaOps, SelectionReportsNaN) {
  SKIP_WITHOUT_CUDA();
  torch::Tensor importance = torch::rand({1, 2, 500}, torch::TensorOptions().device(kCuda));
  importance[0][1][123] = std::nan("");
  rakv::testing::expect_error_containing(
      [&] { rakv::ops::kv_select(importance, 100, 64, rakv::ops::TopkMethod::kExact, 0.02, 0); },
      "importance contains NaN at [0, 1, 123]");
  // kPropagate: no read-back, and the NaN row still gets k valid ascending positions.
  const torch::Tensor kept = rakv::ops::kv_select(importance, 100, 64, rakv::ops::TopkMethod::kExact,
                                                  0.02, 0, rakv::ops::NanPolicy::kPropagate)
                                 .cpu();
  ASSERT_EQ(kept.sizes(), (std::vector<int64_t>{1, 2, 100}));
  EXPECT_TRUE((kept >= 0).all().item<bool>() && (kept < 500).all().item<bool>());
  EXPECT_TRUE((kept.narrow(2, 1, 99) > kept.narrow(2, 0, 99)).all().item<bool>());
}

TEST(CudaOps, TopkBenchmarkTimesTheNanCheckOnItsOwnRow) {
  SKIP_WITHOUT_CUDA();
  rakv::apps::TopkBenchOptions options;
  options.seq_len = 20000;
  options.batch = 1;
  options.heads = 3;
  options.warmup = 1;
  options.repeats = 2;
  options.device = kCuda;
  options.methods = {rakv::ops::TopkMethod::kExact};
  const auto rows = rakv::apps::run_topk_benchmark(options);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].method, "exact");
  EXPECT_EQ(rows[1].method, rakv::apps::kExactNanCheckedMethod);
  for (const auto& row : rows) {
    EXPECT_EQ(row.returned_k, row.k) << row.method;
    EXPECT_EQ(row.recall, 1.0) << row.method;
    EXPECT_GT(row.median_ms, 0.0) << row.method;
  }
}

TEST(CudaOps, ImportanceMatchesTheFloat64Reference) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(73);
  for (auto dtype : {torch::kFloat16, torch::kBFloat16, torch::kFloat32}) {
    for (int64_t d : {64, 128, 40}) {  // 40: the chunked path for head dims without a kernel
      for (int64_t t : {1, 77, 1024}) {
        for (int64_t window : {0, 32}) {
          const torch::Tensor q = torch::randn({2, 3, t, d}, torch::kFloat64);
          const torch::Tensor k = torch::randn({2, 3, t, d}, torch::kFloat64);
          const torch::Tensor reference = rakv::ops::kv_importance(q, k, true, window, 0.0);
          const torch::Tensor gpu =
              rakv::ops::kv_importance(q.to(kCuda, dtype), k.to(kCuda, dtype), true, window, 0.0);
          const double tolerance =
              dtype == torch::kFloat32 ? 1e-5 : (dtype == torch::kFloat16 ? 2e-2 : 5e-2);
          EXPECT_LT(relative_error(gpu.cpu(), reference), tolerance)
              << dtype << " D=" << d << " T=" << t << " window=" << window;
        }
      }
    }
  }
}

TEST(CudaOps, ReciprocalAttentionForwardAndBackwardMatchTheCpu) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(74);
  rakv::nn::ReciprocalAttentionOptions options;
  options.n_embd = 128;
  options.n_head = 2;
  options.per_head_gates = true;
  options.self_restart = true;
  rakv::nn::ReciprocalAttention cpu(options);
  rakv::nn::ReciprocalAttention gpu(options);
  copy_parameters(cpu, gpu);
  gpu->to(kCuda);
  const torch::Tensor x = torch::randn({2, 300, 128});
  const torch::Tensor upstream = torch::randn({2, 300, 128});
  (cpu->forward(x) * upstream).sum().backward();
  const torch::Tensor y = gpu->forward(x.to(kCuda));
  (y * upstream.to(kCuda)).sum().backward();
  EXPECT_LT(relative_error(y.cpu(), cpu->forward(x)), 1e-4);
  for (size_t i = 0; i < cpu->parameters().size(); ++i) {
    EXPECT_LT(relative_error(gpu->parameters()[i].grad().cpu(), cpu->parameters()[i].grad()), 1e-3)
        << i;
  }
}

TEST(CudaOps, PrunedKVAttentionMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(75);
  for (auto mode : {rakv::nn::PruneMode::kVOnly, rakv::nn::PruneMode::kKVScoresReuse,
                    rakv::nn::PruneMode::kLegacy}) {
    rakv::nn::PrunedKVAttention cpu(pruned_options(mode, 64, 32));
    rakv::nn::PrunedKVAttention gpu(pruned_options(mode, 64, 32));
    copy_parameters(cpu, gpu);
    gpu->to(kCuda);
    const torch::Tensor x = torch::randn({2, 200, 64});
    EXPECT_LT(relative_error(gpu->forward(x.to(kCuda)).cpu(), cpu->forward(x)), 1e-4)
        << rakv::nn::to_string(mode);
  }
}

// The one-call variable-length FlashAttention path: half precision against the float64 formula,
// forward and gradients, chunks of unequal lengths (including one query and Tq = Lk).
TEST(CudaOps, ChunkedCausalAttentionVarlenMatchesTheFloat64Reference) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(78);
  for (auto dtype : {torch::kFloat16, torch::kBFloat16}) {
    const std::vector<std::pair<int64_t, int64_t>> shapes = {
        {64, 64}, {37, 300}, {1, 129}, {128, 700}};
    std::vector<torch::Tensor> q, k, v;
    for (const auto& [rows, keys] : shapes) {
      q.push_back(torch::randn({2, 3, rows, 64}, torch::TensorOptions().dtype(dtype).device(kCuda))
                      .requires_grad_());
      k.push_back(torch::randn({2, 3, keys, 64}, torch::TensorOptions().dtype(dtype).device(kCuda))
                      .requires_grad_());
      v.push_back(torch::randn({2, 3, keys, 64}, torch::TensorOptions().dtype(dtype).device(kCuda))
                      .requires_grad_());
    }
    const std::vector<torch::Tensor> out = rakv::ops::chunked_causal_attention(q, k, v);
    const double tolerance = dtype == torch::kFloat16 ? 1e-2 : 4e-2;
    for (size_t c = 0; c < shapes.size(); ++c) {
      const torch::Tensor qd = q[c].detach().to(torch::kFloat64).requires_grad_();
      const torch::Tensor kd = k[c].detach().to(torch::kFloat64).requires_grad_();
      const torch::Tensor vd = v[c].detach().to(torch::kFloat64).requires_grad_();
      const torch::Tensor reference = rakv::testing::chunk_attention_reference(qd, kd, vd);
      EXPECT_LT(relative_error(out[c], reference), tolerance) << dtype << " chunk " << c;
      const torch::Tensor upstream = torch::randn_like(reference);
      const auto got =
          torch::autograd::grad({out[c]}, {q[c], k[c], v[c]}, {upstream.to(dtype)}, true);
      const auto want = torch::autograd::grad({reference}, {qd, kd, vd}, {upstream});
      for (size_t i = 0; i < 3; ++i) {
        EXPECT_LT(relative_error(got[i], want[i]), 2 * tolerance)
            << dtype << " chunk " << c << " input " << i;
      }
    }
  }
}

// PrunedKV in bfloat16 on CUDA (the varlen path) against the float32 CPU layer, every mode,
// forward and weight gradients.
TEST(CudaOps, PrunedKVAttentionBf16MatchesTheCpuForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(79);
  for (auto mode : {rakv::nn::PruneMode::kVOnly, rakv::nn::PruneMode::kKVScoresReuse,
                    rakv::nn::PruneMode::kLegacy}) {
    rakv::nn::PrunedKVAttention cpu(pruned_options(mode, 128, 64));
    rakv::nn::PrunedKVAttention gpu(pruned_options(mode, 128, 64));
    copy_parameters(cpu, gpu);
    gpu->to(kCuda, torch::kBFloat16);
    const torch::Tensor x = torch::randn({2, 500, 128});
    const torch::Tensor upstream = torch::randn({2, 500, 128});
    const torch::Tensor y_cpu = cpu->forward(x);
    (y_cpu * upstream).sum().backward();
    const torch::Tensor y_gpu = gpu->forward(x.to(kCuda, torch::kBFloat16));
    (y_gpu.to(torch::kFloat32) * upstream.to(kCuda)).sum().backward();
    EXPECT_LT(relative_error(y_gpu.cpu(), y_cpu), 5e-2) << rakv::nn::to_string(mode);
    for (size_t i = 0; i < cpu->parameters().size(); ++i) {
      EXPECT_LT(relative_error(gpu->parameters()[i].grad().cpu(), cpu->parameters()[i].grad()),
                5e-2)
          << rakv::nn::to_string(mode) << " parameter " << i;
    }
  }
}

// The LM head pads an odd vocabulary for cuBLAS on CUDA: logits, loss and the tied embedding's
// gradient must be those of the CPU model.
TEST(CudaOps, PaddedLmHeadMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(82);
  rakv::config::Config cfg;
  cfg.set("CONFIG_N_LAYER", "1");
  cfg.set("CONFIG_N_EMBD", "64");
  cfg.set("CONFIG_N_HEAD", "2");
  cfg.set("CONFIG_VOCAB_SIZE", "301");
  rakv::model::GPT2 cpu(rakv::model::gpt2_config_from(cfg));
  rakv::model::GPT2 gpu(rakv::model::gpt2_config_from(cfg));
  copy_parameters(cpu, gpu);
  gpu->to(kCuda);
  const torch::Tensor idx = torch::randint(0, 301, {2, 40}, torch::kInt64);
  const torch::Tensor targets = torch::randint(0, 301, {2, 40}, torch::kInt64);
  const torch::Tensor logits = gpu->forward(idx.to(kCuda));
  EXPECT_EQ(logits.size(-1), 301);
  EXPECT_LT(relative_error(logits.cpu(), cpu->forward(idx)), 1e-4);
  cpu->loss(idx, targets).backward();
  gpu->loss(idx.to(kCuda), targets.to(kCuda)).backward();
  EXPECT_LT(relative_error(gpu->wte->weight.grad().cpu(), cpu->wte->weight.grad()), 1e-3);
}

// The fused cross-entropy on CUDA: loss and gradient of bf16, fp16 and fp32 logits (padding
// columns, ignored rows, a [B, T, V] view whose rows are strided) against float64 on the CPU.
TEST(CudaOps, FusedCrossEntropyMatchesTheFloat64Reference) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(91);
  for (const auto dtype : {torch::kBFloat16, torch::kHalf, torch::kFloat32}) {
    const int64_t columns = 1088, vocab = 1061;
    const torch::Tensor wide = (torch::randn({3, 50, columns + 16}, torch::kFloat64) * 3).to(dtype);
    const torch::Tensor logits = wide.narrow(-1, 0, columns);  // rows strided by columns + 16
    torch::Tensor targets = torch::randint(0, vocab, {3, 50}, torch::kInt64);
    targets.view({-1}).slice(0, 1, torch::indexing::None, 6).fill_(-100);
    const torch::Tensor x = logits.to(kCuda).requires_grad_(true);
    const torch::Tensor loss = rakv::ops::cross_entropy_loss(x, targets.to(kCuda), vocab, -100);
    loss.backward();
    const torch::Tensor x64 = logits.to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor expected = torch::nn::functional::cross_entropy(
        x64.narrow(-1, 0, vocab).reshape({-1, vocab}), targets.reshape({-1}));
    expected.backward();
    SCOPED_TRACE(::testing::Message() << dtype);
    EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 2e-6 * expected.item<double>());
    ASSERT_EQ(x.grad().scalar_type(), dtype);
    const double tol = dtype == torch::kFloat32 ? 1e-5 : dtype == torch::kHalf ? 2e-3 : 1e-2;
    EXPECT_LT(relative_error(x.grad().cpu(), x64.grad()), tol);
    EXPECT_TRUE(x.grad().narrow(-1, vocab, columns - vocab).eq(0).all().item<bool>());
  }
}

// No host check on CUDA (it would stall every step): a target out of range makes the loss NaN,
// which the training loop reports. float64 logits are refused with a clear message.
TEST(CudaOps, FusedCrossEntropyFlagsBadTargetsAndRefusesFloat64) {
  SKIP_WITHOUT_CUDA();
  const torch::Tensor logits = torch::randn({4, 64}, torch::TensorOptions().device(kCuda));
  const torch::Tensor targets = torch::tensor({1, 64, 3, -100}, torch::kInt64).to(kCuda);
  EXPECT_TRUE(std::isnan(rakv::ops::cross_entropy_loss(logits, targets).item<double>()));
  rakv::testing::expect_error_containing(
      [&] { rakv::ops::cross_entropy_loss(logits.to(torch::kFloat64), targets); },
      "float64 logits are supported on the CPU only");
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("rakv::cross_entropy_forward", "")
                      .typed<std::tuple<torch::Tensor, torch::Tensor>(
                          const torch::Tensor&, const torch::Tensor&, int64_t, int64_t)>();
  const torch::Tensor good = torch::tensor({1, 63, 3, -100}, torch::kInt64).to(kCuda);
  const auto [loss, lse] = op.call(logits, good, 64, -100);
  EXPECT_LT(relative_error(lse.cpu(), torch::logsumexp(logits.cpu(), 1)), 1e-6);
}

// The fused gate fold against the float64 CPU op: folded weight, weight and gate gradients, for
// shared and per-head gates (one below the 1e-8 floor).
TEST(CudaOps, FusedGateFoldMatchesTheFloat64Reference) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(95);
  for (const int64_t gates : {1, 6}) {
    const torch::Tensor w0 = torch::randn({3 * 96, 96}, torch::kFloat64);
    torch::Tensor std0 = torch::rand({gates}, torch::kFloat64) + 0.1;
    torch::Tensor rec0 = torch::rand({gates}, torch::kFloat64) + 0.1;
    rec0[0] = -0.25;
    const torch::Tensor dy = torch::randn({3 * 96, 96}, torch::kFloat64);
    const auto on_cuda = [&](const torch::Tensor& t) {
      return t.to(torch::kFloat32).to(kCuda).requires_grad_(true);
    };
    const torch::Tensor w = on_cuda(w0), s = on_cuda(std0), r = on_cuda(rec0);
    const torch::Tensor folded = rakv::ops::fold_reciprocal_gates(w, s, r, 6, 4);
    folded.backward(dy.to(torch::kFloat32).to(kCuda));
    const auto reference = [](const torch::Tensor& t) {
      return t.to(torch::kFloat32).to(torch::kFloat64).requires_grad_(true);
    };
    const torch::Tensor wr = reference(w0), sr = reference(std0), rr = reference(rec0);
    const torch::Tensor expected = rakv::ops::fold_reciprocal_gates(wr, sr, rr, 6, 4);
    expected.backward(dy);
    SCOPED_TRACE(::testing::Message() << gates << " gates");
    EXPECT_LT(relative_error(folded.cpu(), expected), 1e-6);
    EXPECT_LT(relative_error(w.grad().cpu(), wr.grad()), 1e-6);
    EXPECT_LT(relative_error(s.grad().cpu(), sr.grad()), 1e-5);
    EXPECT_LT(relative_error(r.grad().cpu(), rr.grad()), 1e-5);
    EXPECT_EQ(r.grad()[0].item<float>(), 0.0f) << "a gate below the floor gets no gradient";
  }
}

// The fused R-MLP fold against the float64 CPU op: folded weight, weight and scale gradients.
TEST(CudaOps, FusedMlpFoldMatchesTheFloat64Reference) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(96);
  const torch::Tensor w0 = torch::randn({64, 256}, torch::kFloat64);
  const torch::Tensor a0 = torch::full({1}, 0.9, torch::kFloat64), b0 = torch::full({1}, 0.07, torch::kFloat64);
  const torch::Tensor dy = torch::randn({64, 256}, torch::kFloat64);
  const auto on_cuda = [](const torch::Tensor& t) { return t.to(torch::kFloat32).to(kCuda).requires_grad_(true); };
  const torch::Tensor w = on_cuda(w0), a = on_cuda(a0), b = on_cuda(b0);
  const torch::Tensor folded = rakv::ops::fold_reciprocal_mlp_gates(w, a, b, 192);
  folded.backward(dy.to(torch::kFloat32).to(kCuda));
  const auto reference = [](const torch::Tensor& t) {
    return t.to(torch::kFloat32).to(torch::kFloat64).requires_grad_(true);
  };
  const torch::Tensor wr = reference(w0), ar = reference(a0), br = reference(b0);
  const torch::Tensor expected = rakv::ops::fold_reciprocal_mlp_gates(wr, ar, br, 192);
  expected.backward(dy);
  EXPECT_LT(relative_error(folded.cpu(), expected), 1e-6);
  EXPECT_LT(relative_error(w.grad().cpu(), wr.grad()), 1e-6);
  EXPECT_LT(relative_error(a.grad().cpu(), ar.grad()), 1e-5);
  EXPECT_LT(relative_error(b.grad().cpu(), br.grad()), 1e-5);
}

// The fused LayerNorm against float64 on the CPU: float32 x (float32 out), bf16 x with float32
// parameters, a width the kernels do not take (LibTorch's path), and under autocast a bf16 output.
TEST(CudaOps, FusedLayerNormMatchesTheFloat64Reference) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(93);
  struct Case {
    torch::ScalarType x_dtype;
    int64_t c;
    double tol;
  };
  for (const Case& c : {Case{torch::kFloat32, 768, 1e-5}, Case{torch::kBFloat16, 256, 2e-2},
                        Case{torch::kFloat32, 30, 1e-5}, Case{torch::kFloat32, 2048, 1e-5}}) {
    const torch::Tensor x0 = torch::randn({5, 37, c.c}, torch::kFloat64) * 2 + 0.3;
    const torch::Tensor w0 = torch::randn({c.c}, torch::kFloat64) * 0.5 + 1;
    const torch::Tensor b0 = torch::randn({c.c}, torch::kFloat64) * 0.5;
    const torch::Tensor dy = torch::randn({5, 37, c.c}, torch::kFloat64);
    const torch::Tensor x = x0.to(c.x_dtype).to(kCuda).requires_grad_(true);
    const torch::Tensor w = w0.to(torch::kFloat32).to(kCuda).requires_grad_(true);
    const torch::Tensor b = b0.to(torch::kFloat32).to(kCuda).requires_grad_(true);
    const torch::Tensor y = rakv::ops::layer_norm(x, w, b, 1e-5);
    EXPECT_EQ(y.scalar_type(), c.x_dtype);
    y.backward(dy.to(y.scalar_type()).to(kCuda));
    const torch::Tensor xr = x0.to(c.x_dtype).to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor wr = w0.to(torch::kFloat32).to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor br = b0.to(torch::kFloat32).to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor expected = torch::layer_norm(xr, {c.c}, wr, br, 1e-5);
    expected.backward(dy.to(c.x_dtype).to(torch::kFloat64));
    SCOPED_TRACE(::testing::Message() << c.x_dtype << " C=" << c.c);
    EXPECT_LT(relative_error(y.cpu(), expected), c.tol);
    EXPECT_LT(relative_error(x.grad().cpu(), xr.grad()), c.tol);
    EXPECT_LT(relative_error(w.grad().cpu(), wr.grad()), c.tol);
    EXPECT_LT(relative_error(b.grad().cpu(), br.grad()), c.tol);
  }
}

#if TORCH_VERSION_MAJOR >= 2
TEST(CudaOps, FusedLayerNormWritesAutocastsDtype) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(94);
  const torch::Tensor x = torch::randn({64, 768}, torch::TensorOptions().device(kCuda)).requires_grad_(true);
  const torch::Tensor w = torch::randn({768}, torch::TensorOptions().device(kCuda)).requires_grad_(true);
  const torch::Tensor b = torch::randn({768}, torch::TensorOptions().device(kCuda)).requires_grad_(true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  const torch::Tensor y = rakv::ops::layer_norm(x, w, b, 1e-5);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  const torch::Tensor expected = torch::layer_norm(x.detach(), {768}, w.detach(), b.detach(), 1e-5);
  EXPECT_LT(relative_error(y.to(torch::kFloat32), expected), 1e-2);
  y.to(torch::kFloat32).sum().backward();
  EXPECT_EQ(x.grad().scalar_type(), torch::kFloat32);
  EXPECT_LT(relative_error(b.grad().cpu(), torch::full({768}, 64.0)), 1e-6);
}

TEST(CudaOps, FusedGateFoldWritesAutocastsDtype) {
  SKIP_WITHOUT_CUDA();
  const auto options = torch::TensorOptions().device(kCuda);
  const torch::Tensor w = torch::randn({3 * 64, 64}, options);
  const torch::Tensor s = torch::full({1}, 0.9, options), r = torch::full({1}, 0.1, options);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  const torch::Tensor folded = rakv::ops::fold_reciprocal_gates(w, s, r, 4, 4);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  ASSERT_EQ(folded.scalar_type(), torch::kBFloat16);
  EXPECT_LT(relative_error(folded.to(torch::kFloat32), rakv::ops::fold_reciprocal_gates(w, s, r, 4, 4)), 1e-2);
}
#endif

// Under bf16 autocast the checkpointed blocks recompute in autocast (the backward runs outside
// it), so loss and gradients equal the plain run's.
TEST(CudaOps, ActivationCheckpointingUnderAutocastMatchesThePlainRun) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(98);
  rakv::config::Config cfg;
  cfg.set("CONFIG_N_LAYER", "2");
  cfg.set("CONFIG_N_EMBD", "64");
  cfg.set("CONFIG_N_HEAD", "2");
  cfg.set("CONFIG_RMLP_R_FF", "16");
  rakv::model::GPT2 plain(rakv::model::gpt2_config_from(cfg));
  cfg.set("CONFIG_ACTIVATION_CHECKPOINTING", "y");
  rakv::model::GPT2 checkpointed(rakv::model::gpt2_config_from(cfg));
  copy_parameters(plain, checkpointed);
  plain->to(kCuda);
  checkpointed->to(kCuda);
  const torch::Tensor idx = torch::randint(0, 256, {2, 64}, torch::kInt64).to(kCuda);
  const torch::Tensor targets = torch::randint(0, 256, {2, 64}, torch::kInt64).to(kCuda);
  const auto run = [&](rakv::model::GPT2& model) {
    torch::Tensor loss;
    {
      const rakv::util::CudaAutocastScope autocast({true, torch::kBFloat16});
      loss = model->loss(idx, targets);
    }
    loss.backward();
    return loss.item<double>();
  };
  EXPECT_NEAR(run(checkpointed), run(plain), 1e-4);
  const auto want = plain->named_parameters();
  const auto got = checkpointed->named_parameters();
  for (const auto& item : want) {
    ASSERT_TRUE(got[item.key()].grad().defined()) << item.key();
    EXPECT_LT(relative_error(got[item.key()].grad().cpu(), item.value().grad().cpu()), 1e-3) << item.key();
  }
}

TEST(CudaOps, Bf16TrainingStepLowersTheLoss) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(76);
  rakv::config::Config cfg;
  cfg.set("CONFIG_N_LAYER", "2");
  cfg.set("CONFIG_N_EMBD", "128");
  cfg.set("CONFIG_DEVICE", "cuda");
  rakv::model::GPT2 model(rakv::model::gpt2_config_from(cfg));
  model->to(kCuda);
  rakv::apps::StepRunner runner(model, cfg, 1e-3);
  const torch::Tensor x =
      torch::randint(0, 256, {4, 128}, torch::TensorOptions().dtype(torch::kInt64).device(kCuda));
  const double first = runner.step({x}, {x.roll(-1, 1)}, 1e-3).item<double>();
  double last = first;
  for (int i = 0; i < 20; ++i)
    last = runner.step({x}, {x.roll(-1, 1)}, 1e-3).item<double>();
  EXPECT_LT(last, 0.8 * first);
}

// A small RA + R-MLP model on CUDA and its step runner, with or without a CUDA graph.
struct GraphTestRun {
  rakv::model::GPT2 model{nullptr};
  std::unique_ptr<rakv::apps::StepRunner> runner;
};

GraphTestRun graph_test_run(bool graphs, const rakv::model::GPT2* copy_from, bool frozen_gates) {
  rakv::config::Config cfg;
  cfg.set("CONFIG_N_LAYER", "2");
  cfg.set("CONFIG_N_EMBD", "64");
  cfg.set("CONFIG_N_HEAD", "2");
  cfg.set("CONFIG_RMLP_R_FF", "16");
  cfg.set("CONFIG_DEVICE", "cuda");
  cfg.set("CONFIG_GRAD_CLIP", "0.5");
  cfg.set("CONFIG_CUDA_GRAPHS", graphs ? "y" : "n");
  GraphTestRun run;
  run.model = rakv::model::GPT2(rakv::model::gpt2_config_from(cfg));
  if (copy_from != nullptr)
    copy_parameters(*copy_from, run.model);
  run.model->to(kCuda);
  if (frozen_gates) {
    for (auto& layer : run.model->reciprocal_attention_layers())
      layer->freeze_reciprocal_gates();
  }
  run.runner = std::make_unique<rakv::apps::StepRunner>(run.model, cfg, 1e-3);
  return run;
}

// Two micro-batches of [4, 64] tokens, new ones every call.
std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> graph_test_batch() {
  std::vector<torch::Tensor> inputs, targets;
  for (int micro = 0; micro < 2; ++micro) {
    const torch::Tensor tokens = torch::randint(0, 256, {4, 65}, torch::kInt64).to(kCuda);
    inputs.push_back(tokens.narrow(1, 0, 64));
    targets.push_back(tokens.narrow(1, 1, 64));
  }
  return {inputs, targets};
}

// Steps both runs with the same batches and a learning rate that changes every step; the losses
// must agree step by step.
void step_both(GraphTestRun& graph, GraphTestRun& eager, int steps, int first_step) {
  for (int i = 0; i < steps; ++i) {
    const auto [inputs, targets] = graph_test_batch();
    const double lr = 1e-3 * (1.0 + 0.25 * (first_step + i));
    const double want = eager.runner->step(inputs, targets, lr).item<double>();
    const double got = graph.runner->step(inputs, targets, lr).item<double>();
    EXPECT_NEAR(got, want, 1e-4 * std::abs(want)) << "step " << first_step + i;
  }
}

// Same parameters and the same AdamW step count per parameter (the graph advances the device
// counters, the runner the host ones that checkpoints save).
void expect_same_training_state(GraphTestRun& graph, GraphTestRun& eager) {
  const auto want = eager.model->named_parameters();
  const auto got = graph.model->named_parameters();
  for (const auto& item : want)
    EXPECT_LT(relative_error(got[item.key()].cpu(), item.value().cpu()), 1e-4) << item.key();
  auto& want_optimizer = eager.runner->optimizer();
  auto& got_optimizer = graph.runner->optimizer();
  const auto step_of = [](torch::optim::AdamW& optimizer, const torch::Tensor& p) -> int64_t {
    auto& state = optimizer.state();
    const auto it = state.find(rakv::detail::optimizer_state_key(state, p));
    return it == state.end() ? 0
                             : static_cast<torch::optim::AdamWParamState&>(*it->second).step();
  };
  for (size_t g = 0; g < want_optimizer.param_groups().size(); ++g) {
    const auto& want_params = want_optimizer.param_groups()[g].params();
    const auto& got_params = got_optimizer.param_groups()[g].params();
    ASSERT_EQ(got_params.size(), want_params.size());
    for (size_t i = 0; i < want_params.size(); ++i) {
      EXPECT_EQ(step_of(got_optimizer, got_params[i]), step_of(want_optimizer, want_params[i]))
          << "group " << g << " parameter " << i;
    }
  }
}

TEST(CudaOps, FusedAdamWMatchesTheUnfusedStep) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(77);
  std::vector<torch::Tensor> params_a = {
      torch::randn({64, 32}, torch::TensorOptions().device(kCuda)).requires_grad_(),
      torch::randn({32}, torch::TensorOptions().device(kCuda)).requires_grad_()};
  std::vector<torch::Tensor> params_b;
  for (const auto& p : params_a)
    params_b.push_back(p.detach().clone().requires_grad_());
  torch::optim::AdamW unfused(
      params_a, torch::optim::AdamWOptions(1e-2).weight_decay(0.1).betas({0.9, 0.95}));
  torch::optim::AdamW fused(params_b,
                            torch::optim::AdamWOptions(1e-2).weight_decay(0.1).betas({0.9, 0.95}));
  for (int step = 0; step < 5; ++step) {
    for (size_t i = 0; i < params_a.size(); ++i) {
      const torch::Tensor g = torch::randn_like(params_a[i]);
      params_a[i].mutable_grad() = g.clone();
      params_b[i].mutable_grad() = g.clone();
    }
    unfused.step();
    rakv::apps::fused_adamw_step(fused);
  }
  for (size_t i = 0; i < params_a.size(); ++i)
    EXPECT_LT(relative_error(params_b[i], params_a[i]), 1e-5);
}

// The captured step replays with new batches and a new learning rate each step: same losses,
// parameters and AdamW step counts as eager steps (3 eager warm-up steps, 1 capture, 5 replays).
TEST(CudaOps, CudaGraphStepMatchesTheEagerSteps) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(91);
  GraphTestRun eager = graph_test_run(false, nullptr, false);
  GraphTestRun graph = graph_test_run(true, &eager.model, false);
  ASSERT_TRUE(graph.runner->uses_cuda_graph());
  step_both(graph, eager, 9, 0);
  EXPECT_EQ(graph.runner->graph_replays(), 9 - rakv::apps::StepRunner::kGraphWarmupSteps);
  expect_same_training_state(graph, eager);
}

// Unfreezing RA's reciprocal gates adds parameters to the step: after invalidate_graph() the
// next step captures again and w_rec trains from then on, as in the eager run.
TEST(CudaOps, CudaGraphIsCapturedAgainWhenTheGatesUnfreeze) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(92);
  GraphTestRun eager = graph_test_run(false, nullptr, true);
  GraphTestRun graph = graph_test_run(true, &eager.model, true);
  step_both(graph, eager, 5, 0);
  for (GraphTestRun* run : {&eager, &graph}) {
    for (auto& layer : run->model->reciprocal_attention_layers())
      layer->unfreeze_reciprocal_gates();
    run->runner->invalidate_graph();
  }
  step_both(graph, eager, 4, 5);
  EXPECT_EQ(graph.runner->graph_replays(), 6);
  for (auto& layer : graph.model->reciprocal_attention_layers())
    EXPECT_TRUE(layer->w_rec.grad().defined());
  expect_same_training_state(graph, eager);
}

TEST(CudaOps, CudaGraphRefusesAChangedBatchShape) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(93);
  GraphTestRun graph = graph_test_run(true, nullptr, false);
  for (int i = 0; i <= rakv::apps::StepRunner::kGraphWarmupSteps; ++i) {
    const auto [inputs, targets] = graph_test_batch();
    graph.runner->step(inputs, targets, 1e-3);
  }
  auto [inputs, targets] = graph_test_batch();
  inputs.pop_back();
  targets.pop_back();
  rakv::testing::expect_error_containing(
      [&] { graph.runner->step(inputs, targets, 1e-3); },
      "CUDA graph training step: got 1 micro-batches of [4, 64], but the graph was captured for 2 "
      "micro-batches of [4, 64]");
}

}  // namespace
