// rakv's tensor operations: argument checks, CPU/CUDA dispatch and autograd. Every op here is
// also registered with the PyTorch dispatcher under the `rakv` namespace (ops/bindings.cpp), so
// that Python can call torch.ops.rakv.<name> once librakv is loaded.
//
// Shape vocabulary: B batch, T sequence length, C model width, H heads, D = C / H head dim,
// R reciprocal rank (last R dims of each head), D_std = D - R.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace rakv::ops {

// ---------------------------------------------------------------------------------------------
// Reciprocal Attention gates
// ---------------------------------------------------------------------------------------------

// Per-head scale s of the folded layout: s[h] = (g_std x D_std, g_rec x R) with
// g = sqrt(max(w, 1e-8)). w_std, w_rec: [1] (per layer) or [H] (per head), floating.
// Returns [H, D] in the gates' dtype; differentiable in both gates.
torch::Tensor reciprocal_gate_scale(const torch::Tensor& w_std, const torch::Tensor& w_rec,
                                    int64_t n_head, int64_t head_dim, int64_t reciprocal_rank);

// The `fused` gate scaling: since (q*s).(k*s) = (q*s^2).k, scaling the Q rows of the fused
// projection weight by s^2 gives the gated logits with no pass over activations (O(C^2) work,
// independent of T). c_attn_weight: [3C, C] rows [Qf; Kf; V]. Returns [3C, C]; differentiable in
// the weight and both gates. On CUDA (C % 4 == 0) one kernel each way
// (kernels/cuda/reciprocal_gate_fold.cu), and under CUDA autocast the result is already in
// autocast's dtype (the cast the projection's GEMM would make).
torch::Tensor fold_reciprocal_gates(const torch::Tensor& c_attn_weight, const torch::Tensor& w_std,
                                    const torch::Tensor& w_rec, int64_t n_head,
                                    int64_t reciprocal_rank);

// R-MLP's fused down-projection: c_proj_weight [C, D_ff] with its first `split` columns (the
// standard hidden units) times w_std and the rest (the reciprocal units) times rec_scale; w_std
// and rec_scale: one value each ([1] or 0-dim), floating. Returns [C, D_ff]; differentiable in
// all three. On CUDA (split and D_ff multiples of 4) one kernel each way
// (kernels/cuda/reciprocal_gate_fold.cu), the result in autocast's dtype under CUDA autocast.
torch::Tensor fold_reciprocal_mlp_gates(const torch::Tensor& c_proj_weight,
                                        const torch::Tensor& w_std, const torch::Tensor& rec_scale,
                                        int64_t split);

// Builds the folded RA projection from a plain checkpoint's per-head W_q, W_k, W_v (each [C, C],
// head h in rows h*D .. h*D+D-1): Qf = [W_q std rows; W_k last R rows], Kf = [W_k std rows; W_q
// last R rows], V = W_v. Returns [3C, C]. Unlike the reference, it does not multiply the rows by
// the gates (the forward applies them; doing both gated twice).
torch::Tensor repack_reciprocal_qkv(const torch::Tensor& w_q, const torch::Tensor& w_k,
                                    const torch::Tensor& w_v, int64_t n_head,
                                    int64_t reciprocal_rank);

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

// [B, T, C] -> [B, H, T, D] and back.
torch::Tensor split_heads(const torch::Tensor& x, int64_t n_head);
torch::Tensor merge_heads(const torch::Tensor& x);

// softmax(q k^T / sqrt(D) + causal mask) v. q, k, v: [B, H, T, D], same dtype and device.
// Uses LibTorch's scaled_dot_product_attention where the build has it (LibTorch >= 2.0), else
// the materialised form. `dropout_p` applies to the attention weights when > 0.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double dropout_p);

// Attention of Tq new queries against Tk >= Tq cached keys, where query i sits at absolute
// position Tk - Tq + i and sees keys 0 .. Tk - Tq + i. q: [B, H, Tq, D], k, v: [B, H, Tk, D].
torch::Tensor cached_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v);

// Attention with an explicit visibility mask: out_i = softmax over the keys j with
// visible[..., i, j] of q_i.k_j / sqrt(D), times v. q: [B, H, Tq, D], k, v: [B, H, Tk, D],
// visible: bool broadcastable to [B, H, Tq, Tk]. A query that sees no key outputs zeros.
torch::Tensor masked_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& visible);

// Attention of several query chunks, each over its own key/value set whose last Tq_c keys are
// the chunk's own positions (bottom-right causal): query i of chunk c sees keys
// 0 .. Lk_c - Tq_c + i of its set. q[c]: [B, H, Tq_c, D]; k[c], v[c]: [B, H, Lk_c, D] with
// Lk_c >= Tq_c; one dtype and device for all. Returns one [B, H, Tq_c, D] per chunk.
// On CUDA with float16/bfloat16 and D % 8 == 0, D <= 256 (LibTorch >= 2.0) every chunk runs in
// one variable-length FlashAttention call: memory O(sum of Lk_c), no [Tq_c, Lk_c] mask or score
// tensor. Elsewhere one masked attention per chunk. Differentiable in q, k and v.
std::vector<torch::Tensor> chunked_causal_attention(const std::vector<torch::Tensor>& q,
                                                    const std::vector<torch::Tensor>& k,
                                                    const std::vector<torch::Tensor>& v);

// The same over sequences already packed row after row (the variable-length layout): sequence s
// owns the next q_lengths[s] rows of q and the next k_lengths[s] >= q_lengths[s] rows of k and
// v, and its query i sees its keys 0 .. k_lengths[s] - q_lengths[s] + i. q: [Nq, H, D], k, v:
// [Nk, H, D] with Nq = sum q_lengths, Nk = sum k_lengths. Returns [Nq, H, D]. Lets a caller
// build every key set with one gather instead of a copy per set (PrunedKV's training forward).
torch::Tensor packed_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, const std::vector<int64_t>& q_lengths,
                                      const std::vector<int64_t>& k_lengths);

// Column attention mass per chunk of `chunk` consecutive queries: mass[b, h, c, j] = sum over
// the queries i of chunk c (i >= j) of P[i, j], with P the causal softmax of q k^T / sqrt(D).
// q, k: [B, H, T, D] floating; returns [B, H, ceil(T / chunk), T], float64 for float64 input and
// float32 otherwise. Works chunk by
// chunk: memory O(B H chunk T), never B H T^2.
torch::Tensor kv_chunk_column_mass(const torch::Tensor& q, const torch::Tensor& k, int64_t chunk);

// ---------------------------------------------------------------------------------------------
// KVSplice monotone splines (SPEC §4)
// ---------------------------------------------------------------------------------------------
// Vocabulary: N rows, D features (head dim), K knots per feature (K >= 2). A spline is given by
// its knots [D, K] (inputs) and knot values [D, K] (outputs), both finite and strictly increasing
// along K, float32 or float64 on the CPU: feature d is interpolated linearly between the points
// (knots[d, j], values[d, j]) and extended linearly by the first and last segments outside the
// knot range, so it is strictly increasing and invertible. Inputs with NaN or Inf are an error.

// y = g(x). x: [..., D] with the tables' dtype; returns [..., D]. Differentiable in x and values
// (not in knots).
torch::Tensor monotone_spline(const torch::Tensor& x, const torch::Tensor& knots,
                              const torch::Tensor& values);

// x = g^-1(y): the spline with knots and values swapped. y: [..., D]; returns [..., D].
// Differentiable in y and values (not in knots).
torch::Tensor monotone_spline_inverse(const torch::Tensor& y, const torch::Tensor& knots,
                                      const torch::Tensor& values);

// KVSplice's knot values from its parameters: slopes softplus(delta) + 1e-4 per segment,
// normalised so that their width-weighted mean is 1; outputs knots[:, 0] plus the cumulative sums
// of width * slope (so they span the knots' range); then times scale = softplus(scale_raw) + 1e-3
// plus shift. knots: [D, K], delta: [D, K - 1], scale_raw, shift: [D], one floating dtype.
// Returns [D, K]; differentiable in delta, scale_raw and shift. Constant delta, scale_raw =
// log(exp(1 - 1e-3) - 1) and shift = 0 give the identity.
torch::Tensor monotone_spline_knot_values(const torch::Tensor& knots, const torch::Tensor& delta,
                                          const torch::Tensor& scale_raw,
                                          const torch::Tensor& shift);

// The kernels without autograd: g(input) (inverse = false) or g^-1(input), input [..., D] ->
// [..., D]; and their backward for grad_output [..., D]: (grad_input [..., D], grad_values
// [D, K]) in the tables' dtype.
torch::Tensor monotone_spline_eval(const torch::Tensor& input, const torch::Tensor& knots,
                                   const torch::Tensor& values, bool inverse);
std::tuple<torch::Tensor, torch::Tensor> monotone_spline_backward(const torch::Tensor& grad_output,
                                                                  const torch::Tensor& input,
                                                                  const torch::Tensor& knots,
                                                                  const torch::Tensor& values,
                                                                  bool inverse);

// ---------------------------------------------------------------------------------------------
// KV pruning: key importance and top-k selection (SPEC §3)
// ---------------------------------------------------------------------------------------------

// Attention-mass importance of every key, without materialising the T x T matrix: the causal
// scores of one tile of queries at a time go to an O(T) scratch row that yields each row's
// log-sum-exp and then its column mass exp(s - lse) (kernels/cpu/kv_importance.cpp).
// q, k: [B, H, T, D], same shape and dtype, any strides (a last dim that is not contiguous is
// copied); float32 or float64 on the CPU (CUDA builds: ops/cuda/cuda_ops.h). NaN is an error. P =
// causal softmax(q k^T * scale), scale = 1 / sqrt(D) when scale <= 0. window = 0: all T queries
// count; window = w > 0: only the last min(w, T) do (SnapKV-style). importance[b, h, j] = sum over
// counted queries i >= j of P[i, j], divided by
//   exposure_correction ? the number of counted queries that see j (min(T - j, w))
//                       : the number of counted queries (T or min(w, T)).
// Returns [B, H, T] in the input dtype; not differentiable. Memory O(B H T + threads T).
torch::Tensor kv_importance(const torch::Tensor& q, const torch::Tensor& k,
                            bool exposure_correction, int64_t window, double scale);

// k_keep = min(T, max(k_min, floor(T * keep_ratio))). Requires T >= 1, keep_ratio in (0, 1],
// k_min >= 1.
int64_t kv_keep_count(int64_t T, double keep_ratio, int64_t k_min);

enum class TopkMethod { kExact, kSampling, kAuditSampling };
// "exact" | "sampling" | "audit_sampling"; anything else is an error naming the choices.
TopkMethod parse_topk_method(const std::string& name);
std::string to_string(TopkMethod method);

// Positions to keep per (b, h) row of importance [B, H, T] (any strides; float32 or float64 on
// the CPU, CUDA builds: ops/cuda/cuda_ops.h). Returns int64 [B, H, n], each row ascending, where n
// = k_keep for exact and sampling and n = max(1, floor(k_keep * sample_size / T)) for
// audit_sampling (the audit's defect, reproduced on purpose; its rows may repeat a position).
// - exact: the k_keep most important positions, ties to the lower index (radix select, O(T)).
// - sampling: threshold estimated from a sample, then exactly k_keep (see kernels/kv_select.h);
//   may differ from exact, its recall is measured.
// - audit_sampling: the audit's code as written; ignores recency.
// recency: the last min(recency, k_keep) positions are always kept when T > recency (exact and
// sampling). sample_fraction (sampling methods, in (0, 1]): sample_size = max(64,
// floor(T * sample_fraction)) capped at T. seed makes the sampling methods deterministic.
// Errors: k_keep outside [1, T], recency < 0, NaN in importance ("importance contains NaN at
// [b, h, j]") unless nan_policy is kPropagate on CUDA, bad dims, dtype or device.
// nan_policy (CUDA only; the CPU always checks, at no cost): kError reads the kernels' row status
// back, a host synchronisation per call; kPropagate skips it, and a NaN row still gets valid,
// ascending positions (NaN ranks above every value). For callers whose NaN shows up elsewhere
// anyway: PrunedKV's training forward, where a NaN query or key makes the loss NaN.
enum class NanPolicy { kError, kPropagate };
torch::Tensor kv_select(const torch::Tensor& importance, int64_t k_keep, int64_t recency,
                        TopkMethod method, double sample_fraction, uint64_t seed,
                        NanPolicy nan_policy = NanPolicy::kError);

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

// LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * weight + bias, the biased variance
// (as torch::layer_norm). x: [..., C] floating; weight, bias: [C], on x's device. Differentiable in
// all three. On CUDA, for C % 4 == 0 and 4 <= C <= 2048, x float32 with float32 parameters or x
// bf16/fp16 with parameters of its dtype or float32, a fused kernel (kernels/cuda/layer_norm.cu)
// whose output is in autocast's dtype when CUDA autocast is on and x is float32 (as the next GEMM
// reads it; torch::layer_norm would return float32 there), else in x's dtype. Otherwise
// torch::layer_norm.
torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, double eps);

// ---------------------------------------------------------------------------------------------
// Language-model loss
// ---------------------------------------------------------------------------------------------

// Mean softmax cross-entropy of language-model logits, fused: the loss and its gradient are
// computed from the logits as they are (bf16 under autocast), with no float32 copy and no stored
// softmax (kernels/cpu/cross_entropy.cpp, kernels/cuda/cross_entropy.cu).
// logits: [..., columns], float32, float64, float16 or bfloat16 (float64 on the CPU only), on
// the CPU or CUDA. targets: int64 [...] (logits' leading shape), same device. The first
// `vocab_size` columns are the classes (vocab_size <= 0: all of them); the rest are padding (an
// LM head padded to a GEMM-friendly width), never read, with zero gradient. Rows whose target is
// `ignore_index` count neither in the sum nor in the mean.
// Returns a 0-dim tensor, float64 for float64 logits and float32 otherwise: the mean over counted
// rows of logsumexp(x[:vocab]) - x[target] (NaN when every row is ignored, like PyTorch's).
// Differentiable in logits; the gradient has the logits' dtype and shape.
// A target outside [0, vocab_size) that is not ignore_index is an error on the CPU; on CUDA,
// where checking would stall the host every step, that row's loss (and so the mean) is NaN.
torch::Tensor cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                 int64_t vocab_size = 0, int64_t ignore_index = -100);

// The kernels without autograd, on logits [..., columns] and targets [...] as above:
// cross_entropy_forward returns (loss, lse), both [N] rows (N = targets.numel()) in float32
// (float64 for float64 logits): loss 0 on ignored rows. cross_entropy_backward takes that lse
// and grad_scale, a 0-dim tensor on the logits' device (the gradient of the caller's total with
// respect to every counted row's loss), and returns grad_logits shaped like logits.
std::tuple<torch::Tensor, torch::Tensor> cross_entropy_forward(const torch::Tensor& logits,
                                                               const torch::Tensor& targets,
                                                               int64_t vocab_size,
                                                               int64_t ignore_index);
torch::Tensor cross_entropy_backward(const torch::Tensor& grad_scale, const torch::Tensor& logits,
                                     const torch::Tensor& targets, const torch::Tensor& lse,
                                     int64_t vocab_size, int64_t ignore_index);

// Threads the KV pruning CPU kernels use: OMP_NUM_THREADS when set, else every core. Not
// at::get_num_threads(): training sets that to 1 so that OpenBLAS owns the cores, while these
// kernels run between the GEMMs.
int kv_kernel_threads();

}  // namespace rakv::ops
