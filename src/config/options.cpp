// The table of every configuration option. Defaults make the embedded default job: a tiny
// RA + R-MLP GPT-2 trained on the CPU on Debian's fortunes in about two minutes.
#include <algorithm>

#include "rakv/config.h"

namespace rakv::config {
namespace {

using T = OptionType;

OptionSpec option(std::string name, T type, std::string default_value, std::string menu,
                  std::string prompt, std::string help) {
  OptionSpec spec;
  spec.name = std::move(name);
  spec.type = type;
  spec.default_value = std::move(default_value);
  spec.menu = std::move(menu);
  spec.prompt = std::move(prompt);
  spec.help = std::move(help);
  return spec;
}

OptionSpec with_range(OptionSpec spec, double lo, double hi) {
  spec.range = std::make_pair(lo, hi);
  return spec;
}

OptionSpec with_choices(OptionSpec spec, std::vector<std::string> choices) {
  spec.choices = std::move(choices);
  return spec;
}

OptionSpec depends(OptionSpec spec, std::string on) {
  spec.depends_on = std::move(on);
  return spec;
}

std::vector<OptionSpec> build_registry() {
  const std::string model = "Model";
  const std::string ra = "Reciprocal Attention (RA)";
  const std::string rmlp = "Reciprocal MLP (R-MLP)";
  const std::string train = "Training";
  const std::string sample = "Generation";
  std::vector<OptionSpec> r;

  r.push_back(with_range(option("CONFIG_N_LAYER", T::kInt, "4", model, "Transformer blocks",
                                "Number of pre-LayerNorm transformer blocks."),
                         1, 128));
  r.push_back(with_range(option("CONFIG_N_HEAD", T::kInt, "4", model, "Attention heads",
                                "Heads per attention layer; CONFIG_N_EMBD must be divisible by "
                                "it."),
                         1, 256));
  r.push_back(with_range(option("CONFIG_N_EMBD", T::kInt, "128", model, "Embedding width",
                                "Model width C; the head dimension is C / CONFIG_N_HEAD."),
                         2, 65536));
  r.push_back(with_range(option("CONFIG_BLOCK_SIZE", T::kInt, "128", model, "Context length",
                                "Maximum sequence length T (size of the learned position "
                                "table)."),
                         1, 1048576));
  r.push_back(with_range(option("CONFIG_VOCAB_SIZE", T::kInt, "256", model, "Vocabulary size",
                                "Token vocabulary; the packaged text is byte-level, which needs "
                                "at least 256."),
                         2, 1048576));
  r.push_back(with_range(option("CONFIG_MLP_EXPANSION", T::kInt, "4", model, "MLP expansion",
                                "Hidden width of every MLP is CONFIG_MLP_EXPANSION * "
                                "CONFIG_N_EMBD."),
                         1, 64));
  r.push_back(with_range(option("CONFIG_DROPOUT", T::kFloat, "0.0", model, "Dropout",
                                "Dropout probability for attention weights and residual "
                                "branches (0 disables)."),
                         0.0, 0.99));
  r.push_back(option("CONFIG_ACTIVATION_CHECKPOINTING", T::kBool, "n", model,
                     "Activation checkpointing",
                     "Training keeps only each block's input and recomputes the block during the "
                     "backward: activation memory of one block instead of all, for about one more "
                     "forward pass. Needs CONFIG_DROPOUT=0 and no PrunedKV layer (CONFIG_KV_PRUNE=n): "
                     "a recompute would draw new dropout masks and advance PrunedKV's state."));

  r.push_back(option("CONFIG_RA", T::kBool, "y", ra, "Reciprocal Attention",
                     "Use Reciprocal Attention in the layers listed by CONFIG_RA_LAYERS: the last "
                     "R dims of each head carry a key-to-query (reciprocal) term, mixed with "
                     "learnable gates w_std and w_rec."));
  r.push_back(depends(option("CONFIG_RA_LAYERS", T::kString, "all", ra, "RA layers",
                             "\"all\", \"none\" or a comma-separated list of layer indices "
                             "(0-based) that use RA; the others use plain attention."),
                      "CONFIG_RA"));
  r.push_back(depends(with_range(option("CONFIG_RA_R", T::kInt, "4", ra, "Reciprocal rank R",
                                        "Dimensions per head given to the reciprocal term "
                                        "(0 < R < head dim)."),
                                 1, 65535),
                      "CONFIG_RA"));
  r.push_back(depends(option("CONFIG_RA_PER_HEAD_GATES", T::kBool, "n", ra, "Per-head gates",
                             "Learn w_std and w_rec per head instead of one pair per layer."),
                      "CONFIG_RA"));
  r.push_back(depends(option("CONFIG_RA_SELF_RESTART", T::kBool, "n", ra, "Self-restart",
                             "Mix each head's output with its own value: out = (1 - a) * out + "
                             "a * V, with a learned per head (init 0.05, clamped to [0, 0.5])."),
                      "CONFIG_RA"));
  r.push_back(depends(
      with_choices(option("CONFIG_RA_GATE_SCALING", T::kChoice, "fused", ra,
                          "Gate-scaling implementation",
                          "split_cat: the reference's slices and concatenations; scale_tensor: "
                          "the audit's two multiplies; fused: gates folded into the Q rows of "
                          "the projection weight (no extra pass over activations). All three "
                          "give the same outputs and gradients."),
                   {"split_cat", "scale_tensor", "fused"}),
      "CONFIG_RA"));
  r.push_back(depends(with_range(option("CONFIG_RA_GATE_WARMUP_STEPS", T::kInt, "0", ra,
                                        "Delayed reciprocal gate activation",
                                        "Keep w_rec at 0 (frozen) for this many optimizer steps, "
                                        "then set it to 0.1 and train it (0 disables)."),
                                 0, 1e9),
                      "CONFIG_RA"));

  r.push_back(option("CONFIG_RMLP", T::kBool, "y", rmlp, "Reciprocal MLP",
                     "Use the Reciprocal MLP in the layers listed by CONFIG_RMLP_LAYERS: the "
                     "hidden layer is split into a standard part and a low-rank reciprocal "
                     "part of CONFIG_RMLP_R_FF units, mixed with gates w_std and w_rec."));
  r.push_back(depends(option("CONFIG_RMLP_LAYERS", T::kString, "all", rmlp, "R-MLP layers",
                             "\"all\", \"none\" or a comma-separated list of layer indices "
                             "(0-based) that use R-MLP; the others use a plain MLP."),
                      "CONFIG_RMLP"));
  r.push_back(depends(with_range(option("CONFIG_RMLP_R_FF", T::kInt, "64", rmlp,
                                        "Reciprocal hidden units R_ff",
                                        "Hidden units of the reciprocal part (0 < R_ff < "
                                        "hidden width)."),
                                 1, 1048576),
                      "CONFIG_RMLP"));
  r.push_back(depends(option("CONFIG_RMLP_TIED", T::kBool, "n", rmlp, "Tied up-projection",
                             "The reciprocal part reuses the first R_ff rows of the standard "
                             "up-projection (works for any R_ff; the reference's tied mode only "
                             "ran when R_ff == n_embd)."),
                      "CONFIG_RMLP"));
  r.push_back(depends(option("CONFIG_RMLP_MIXER", T::kBool, "n", rmlp, "Reciprocal mixer",
                             "A learned R_ff x R_ff matrix applied to the reciprocal hidden "
                             "units (initialised to the identity)."),
                      "CONFIG_RMLP"));
  r.push_back(depends(option("CONFIG_RMLP_GATE_ALPHA", T::kBool, "n", rmlp, "gate_alpha",
                             "An extra learned scalar (init 0.1) on the reciprocal hidden "
                             "units."),
                      "CONFIG_RMLP"));
  r.push_back(depends(
      with_choices(option("CONFIG_RMLP_IMPL", T::kChoice, "fused", rmlp, "R-MLP implementation",
                          "literal: two up-projections, gates and a concatenation as written; "
                          "fused: one up-projection GEMM into one buffer and the gates (and "
                          "mixer) folded into the down-projection weight, the cost of a plain "
                          "MLP. Both give the same outputs and gradients."),
                   {"literal", "fused"}),
      "CONFIG_RMLP"));

  const std::string kv = "KV pruning (PrunedKVAttention)";
  r.push_back(option("CONFIG_KV_PRUNE", T::kBool, "n", kv, "PrunedKV attention",
                     "Use PrunedKVAttention in the layers listed by CONFIG_KV_PRUNE_LAYERS: each query "
                     "sees a budget of the earlier keys, chosen by attention mass, plus a recency "
                     "window. Causal: the keys a query sees are chosen from the queries before it "
                     "only (re-selected every CONFIG_KV_PRUNE_INTERVAL tokens)."));
  r.push_back(depends(option("CONFIG_KV_PRUNE_LAYERS", T::kString, "all", kv, "PrunedKV layers",
                             "\"all\", \"none\" or a comma-separated list of layer indices that use "
                             "PrunedKV attention (they must not also be RA layers)."),
                      "CONFIG_KV_PRUNE"));
  r.push_back(depends(
      with_choices(option("CONFIG_KV_PRUNE_MODE", T::kChoice, "v_only", kv, "Pruning mode",
                          "v_only: softmax over every earlier key, values of the kept keys only; "
                          "kv_scores_reuse: softmax over the kept keys, reusing the scores; legacy: "
                          "the same by gathering the kept K/V and recomputing the scores (keeps a "
                          "fixed CONFIG_KV_K_KEEP, 391 when 0, as the reference did)."),
                   {"v_only", "kv_scores_reuse", "legacy"}),
      "CONFIG_KV_PRUNE"));
  r.push_back(depends(with_range(option("CONFIG_KV_KEEP_RATIO", T::kFloat, "0.381966", kv, "Keep ratio",
                                        "Fraction of the earlier keys kept: k_keep = min(s, max(k_min, "
                                        "floor(s * ratio))); default 1 / (1 + golden ratio)."),
                                 1e-6, 1.0),
                      "CONFIG_KV_PRUNE"));
  r.push_back(with_range(option("CONFIG_KV_K_MIN", T::kInt, "64", kv, "Minimum keys kept",
                               "k_min of the keep-count formula (pruned layers and the generation cache's eviction)."),
                        1, 1e9));
  r.push_back(depends(with_range(option("CONFIG_KV_K_KEEP", T::kInt, "0", kv, "Fixed keys kept",
                                        "When > 0, keep this many keys instead of the ratio."),
                                 0, 1e9),
                      "CONFIG_KV_PRUNE"));
  r.push_back(with_range(option("CONFIG_KV_RECENCY", T::kInt, "64", kv, "Recency window",
                               "The most recent keys always kept (pruned layers and the generation cache)."),
                        0, 1e9));
  r.push_back(option("CONFIG_KV_EXPOSURE_CORRECT", T::kBool, "y", kv, "Exposure correction",
                    "Divide a key's attention mass by the number of queries that could see "
                    "it, instead of by all queries (older keys are not favoured)."));
  r.push_back(with_range(option("CONFIG_KV_PRUNE_INTERVAL", T::kInt, "0", kv, "Re-selection interval",
                               "Tokens between re-selections of the kept keys; 0 = automatic "
                               "(max(recency, T / 32))."),
                        0, 1e9));
  r.push_back(depends(with_range(option("CONFIG_KV_EMA_MOMENTUM", T::kFloat, "0", kv, "Importance EMA",
                                        "Momentum of a per-head positional importance profile blended "
                                        "into the selection (0 disables; the reference used 0.9, "
                                        "updated every 8 calls)."),
                                 0.0, 0.999),
                      "CONFIG_KV_PRUNE"));
  r.push_back(depends(option("CONFIG_RA_USE_SAMPLING", T::kBool, "n", kv, "Sampled selection",
                             "Above CONFIG_RA_SAMPLING_THRESHOLD keys, select with the corrected "
                             "sampling method (exact count, approximate set) instead of exact "
                             "selection. Exact selection is usually as fast."),
                      "CONFIG_KV_PRUNE"));
  r.push_back(depends(with_range(option("CONFIG_RA_SAMPLING_THRESHOLD", T::kInt, "4096", kv,
                                        "Sampling threshold", "Prefix length above which sampling is used."),
                                 1, 1e9),
                      "CONFIG_KV_PRUNE"));
  r.push_back(depends(with_range(option("CONFIG_KV_SAMPLE_FRACTION", T::kFloat, "0.02", kv, "Sample fraction",
                                        "Fraction of the keys sampled (at least 64) to estimate the "
                                        "selection threshold."),
                                 1e-6, 1.0),
                      "CONFIG_KV_PRUNE"));

  const std::string cache = "Generation KV cache";
  r.push_back(with_range(option("CONFIG_KV_BUDGET", T::kFloat, "1.0", cache, "KV cache budget",
                                "Fraction of the tokens whose keys and values the generation cache "
                                "keeps (evicting by attention mass, keeping the recency window; 1 "
                                "keeps all). `rakv generate --kv-budget` overrides it."),
                         1e-6, 1.0));
  r.push_back(option("CONFIG_KVSPLICE", T::kBool, "n", cache, "KVSplice V compression",
                     "Hold V in the generation cache compressed by a KVSplice (monotone spline + "
                     "PCA) per layer, fitted on the model's V vectors of the training text after "
                     "training (or given with --kvsplice)."));
  r.push_back(depends(with_range(option("CONFIG_KVSPLICE_LATENT", T::kInt, "16", cache, "KVSplice latent size",
                                        "Values kept per token and head instead of the head dim D."),
                                 1, 65536),
                      "CONFIG_KVSPLICE"));
  r.push_back(with_range(option("CONFIG_KVSPLICE_KNOTS", T::kInt, "7", cache, "KVSplice knots",
                                "Knots of each feature's monotone spline."),
                         2, 1024));
  r.push_back(with_range(option("CONFIG_KVSPLICE_EPOCHS", T::kInt, "8", cache, "KVSplice fit epochs",
                                "Epochs of the spline fit (AdamW, lr 2e-3, weight decay 1e-4)."),
                         0, 1e6));

  r.push_back(with_choices(option("CONFIG_DEVICE", T::kChoice, "cpu", train, "Device",
                                  "Where to train and generate: cpu or cuda (needs a build "
                                  "with -DRAKV_CUDA=ON)."),
                           {"cpu", "cuda"}));
  r.push_back(option("CONFIG_CUDA_GRAPHS", T::kBool, "n", train, "CUDA graph of the training step",
                     "After three eager warm-up steps, capture the whole training step (every "
                     "micro-batch's forward and backward, clipping, AdamW) once as a CUDA graph "
                     "and replay it: one launch per step instead of one per kernel. Needs "
                     "CONFIG_DEVICE=cuda, a fixed batch shape and no PrunedKV layer "
                     "(CONFIG_KV_PRUNE=n)."));
  r.push_back(with_range(option("CONFIG_SEED", T::kInt, "1337", train, "Random seed",
                                "Seeds initialisation, batch sampling and dropout; a CPU run "
                                "with the same seed and config is reproducible."),
                         0, 9.0e18));
  r.push_back(option("CONFIG_DATA", T::kString, "", train, "Training text",
                     "Path of a UTF-8 text file or a directory of them; empty means the "
                     "packaged English text of Debian's fortunes package."));
  r.push_back(with_range(option("CONFIG_VAL_FRACTION", T::kFloat, "0.1", train,
                                "Validation fraction",
                                "Fraction of the text held out for validation."),
                         0.01, 0.5));
  r.push_back(with_range(option("CONFIG_BATCH_SIZE", T::kInt, "16", train, "Batch size",
                                "Sequences per micro-batch."),
                         1, 65536));
  r.push_back(with_range(option("CONFIG_GRAD_ACCUM_STEPS", T::kInt, "1", train,
                                "Gradient accumulation",
                                "Micro-batches accumulated per optimizer step."),
                         1, 65536));
  r.push_back(with_range(option("CONFIG_MAX_ITERS", T::kInt, "400", train, "Optimizer steps",
                                "Number of optimizer steps."),
                         1, 1e9));
  r.push_back(with_range(option("CONFIG_LEARNING_RATE", T::kFloat, "3e-3", train,
                                "Peak learning rate", "AdamW learning rate after warm-up."),
                         0.0, 10.0));
  r.push_back(with_range(option("CONFIG_MIN_LR", T::kFloat, "3e-4", train, "Final learning rate",
                                "Learning rate reached by the cosine decay at the last step."),
                         0.0, 10.0));
  r.push_back(with_range(option("CONFIG_WARMUP_ITERS", T::kInt, "20", train, "Warm-up steps",
                                "Linear learning-rate warm-up steps."),
                         0, 1e9));
  r.push_back(with_range(option("CONFIG_WEIGHT_DECAY", T::kFloat, "0.1", train, "Weight decay",
                                "AdamW weight decay for matrices (not for gates, norms or "
                                "biases)."),
                         0.0, 10.0));
  r.push_back(with_range(option("CONFIG_BETA1", T::kFloat, "0.9", train, "AdamW beta1",
                                "First-moment decay."),
                         0.0, 0.999999));
  r.push_back(with_range(option("CONFIG_BETA2", T::kFloat, "0.95", train, "AdamW beta2",
                                "Second-moment decay."),
                         0.0, 0.999999));
  r.push_back(with_range(option("CONFIG_GRAD_CLIP", T::kFloat, "1.0", train,
                                "Gradient clipping",
                                "Clip the global gradient norm to this value (0 disables)."),
                         0.0, 1e9));
  r.push_back(with_range(option("CONFIG_EVAL_INTERVAL", T::kInt, "100", train, "Eval interval",
                                "Evaluate validation loss (and write a checkpoint) every this "
                                "many steps, and at the last step."),
                         1, 1e9));
  r.push_back(with_range(option("CONFIG_EVAL_ITERS", T::kInt, "8", train, "Eval batches",
                                "Validation batches averaged per evaluation (always the same "
                                "batches)."),
                         1, 1e6));

  r.push_back(with_range(option("CONFIG_SAMPLE_TOKENS", T::kInt, "200", sample,
                                "Tokens to generate",
                                "Tokens generated after training and by `rakv generate`."),
                         0, 1e7));
  r.push_back(with_range(option("CONFIG_TEMPERATURE", T::kFloat, "0.8", sample, "Temperature",
                                "Sampling temperature (0 means greedy)."),
                         0.0, 100.0));
  r.push_back(with_range(option("CONFIG_TOP_K", T::kInt, "40", sample, "Top-k sampling",
                                "Sample among the k most likely tokens (0 means all)."),
                         0, 1048576));
  r.push_back(option("CONFIG_SAMPLE_PROMPT", T::kString, "The ", sample, "Sample prompt",
                     "Prompt of the sample generated after training."));
  return r;
}

}  // namespace

const std::vector<OptionSpec>& option_registry() {
  static const std::vector<OptionSpec> registry = build_registry();
  return registry;
}

const OptionSpec* find_option(std::string_view name) {
  const auto& registry = option_registry();
  auto it = std::find_if(registry.begin(), registry.end(),
                         [&](const OptionSpec& spec) { return spec.name == name; });
  return it == registry.end() ? nullptr : &*it;
}

}  // namespace rakv::config
