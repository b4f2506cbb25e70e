// KVSplice (SPEC §4): a learned compressor of the V cache. Each head-dim feature d goes through
// a monotone piecewise-linear spline g_d (K knots at the calibration quantiles 0, 1/(K-1), .., 1
// of that feature; learned slopes; linear extension outside the knots; a per-feature scale and
// shift), then PCA keeps the top k_latent directions of g(V):
//   compress(V)   = (g(V) - mu) V_k                 [..., D] -> [..., k_latent]
//   decompress(Z) = g^-1(Z V_k^T + mu)              [..., k_latent] -> [..., D]
// fit() learns the spline with AdamW on MSE(g^-1(PCA round trip of g(x)), x), refitting the PCA
// (detached) every epoch, and keeps the epoch with the lowest reconstruction error on the whole
// calibration set, counting the identity spline (plain PCA) as epoch 0: a fitted KVSplice is
// never worse than plain PCA on its calibration data. `plain_pca` skips the spline altogether.
//
// One KVSplice serves one model layer, fitted on the V vectors of all its heads pooled as
// [N, D] rows. The module works in the dtype of its tensors (float32 unless converted with
// to(torch::kFloat64)) on the CPU; inputs of another floating dtype are converted.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rakv/io/safetensors.h"

namespace rakv::nn {

struct KVSpliceOptions {
  int64_t head_dim = 64;    // D >= 1
  int64_t latent_dim = 16;  // k_latent, 1 <= k_latent <= D
  int64_t num_knots = 7;    // K >= 2
  bool plain_pca = false;   // identity spline: plain PCA (the baseline), no spline fit
};

struct KVSpliceFitOptions {
  int64_t epochs = 8;
  double lr = 2e-3;
  double weight_decay = 1e-4;
  uint64_t seed = 0;  // minibatch shuffling
  // Rows per minibatch; 0 = SPEC §4's min(4096, max(256, N / 8)), capped at N.
  int64_t batch_size = 0;
};

struct KVSpliceFitReport {
  // Reconstruction MSE on the whole calibration set after each completed epoch (PCA refitted);
  // entry 0 is the identity spline (plain PCA). Size epochs + 1 (1 for plain_pca), fewer when
  // training diverged.
  std::vector<double> calibration_mse;
  // Mean minibatch loss of the completed epochs 1, 2, .. (empty for plain_pca).
  std::vector<double> train_loss;
  int64_t best_epoch = 0;  // the epoch whose parameters the module keeps
  // A step left the spline unusable (knot values not finite or no longer strictly increasing,
  // e.g. from a far too large learning rate): training stopped there, the best epoch is kept.
  bool diverged = false;
  double seconds = 0;  // wall time of fit()
};

class KVSplice;

class KVSpliceImpl : public torch::nn::Module {
 public:
  explicit KVSpliceImpl(const KVSpliceOptions& options);

  // Places the knots at calib_v's per-feature quantiles, resets the spline to the identity and
  // fits it (unless plain_pca), then the PCA. calib_v: [N, D] (or [..., D], flattened), floating,
  // finite, N >= max(k_latent, 2).
  KVSpliceFitReport fit(const torch::Tensor& calib_v, const KVSpliceFitOptions& options = {});

  // v: [..., D] -> [..., k_latent], in the module's dtype. Needs a fitted or loaded module.
  torch::Tensor compress(const torch::Tensor& v) const;
  // z: [..., k_latent] -> [..., D], in the module's dtype.
  torch::Tensor decompress(const torch::Tensor& z) const;
  // decompress(compress(v)): [..., D] -> [..., D].
  torch::Tensor forward(const torch::Tensor& v) const;
  // Mean squared error of forward(v) against v over all elements, in float64.
  double reconstruction_error(const torch::Tensor& v) const;

  // The spline g and its inverse alone: [..., D] -> [..., D] (identity for plain_pca).
  // Differentiable in the input and in delta, scale_raw and shift.
  torch::Tensor spline(const torch::Tensor& x) const;
  torch::Tensor spline_inverse(const torch::Tensor& y) const;
  // The spline's knot outputs (with scale and shift) from its parameters: [D, K].
  torch::Tensor knot_values() const;
  // The fit objective on x [M, D] with the current (constant) PCA: mean over elements of
  // (g^-1((g(x) - mu) V_k V_k^T + mu) - x)^2. Scalar; differentiable in delta, scale_raw, shift.
  torch::Tensor fit_loss(const torch::Tensor& x) const;
  // Refits mu and V_k on g(x), x: [M, D] with M >= k_latent, without gradient.
  void fit_pca(const torch::Tensor& x);

  // Bytes of one compressed V vector (one token, one head): k_latent x the element size of the
  // module's dtype; uncompressed: D x the same.
  int64_t bytes_per_token_head() const;
  int64_t uncompressed_bytes_per_token_head() const;

  // Writes knots, spline parameters and PCA as safetensors with metadata format
  // "rakv-kvsplice/1", head_dim, num_knots, latent_dim, plain_pca. Needs a fitted module.
  void save(const std::string& path) const;
  // Reads a file written by save(). With expected_head_dim, a file for another head dim is an
  // error that names both.
  static KVSplice load(const std::string& path,
                       std::optional<int64_t> expected_head_dim = std::nullopt);

  // The pieces of save() and load(), for files that hold several modules under name prefixes:
  // the tensors (names prefixed), the metadata, the options a file's metadata describes, and a
  // fitted module rebuilt from the tensors `prefix`* of `file` (validated like load()).
  io::NamedTensors state(const std::string& prefix) const;
  std::map<std::string, std::string> metadata() const;
  static KVSpliceOptions options_from_metadata(const io::TensorFile& file, const std::string& path,
                                               std::optional<int64_t> expected_head_dim);
  static KVSplice from_state(const KVSpliceOptions& options, const io::TensorFile& file,
                             const std::string& prefix, const std::string& path);

  bool is_fitted() const { return fitted_; }
  const KVSpliceOptions& options() const { return options_; }

  torch::Tensor knots;      // buffer [D, K]: calibration quantiles, strictly increasing
  torch::Tensor delta;      // parameter [D, K - 1]: segment slopes before softplus
  torch::Tensor scale_raw;  // parameter [D]: scale = softplus(scale_raw) + 1e-3
  torch::Tensor shift;      // parameter [D]
  torch::Tensor pca_mean;   // buffer [D]: mu, the mean of g(calibration V)
  torch::Tensor pca_basis;  // buffer [D, k_latent]: V_k, orthonormal columns

 private:
  void check_fitted(const char* what) const;
  // Knot values finite and strictly increasing (what the spline ops need).
  bool spline_is_usable() const;
  torch::Tensor rows_in_module_dtype(const torch::Tensor& x, int64_t width, const char* what) const;
  void reset_spline();
  // knot_values() for the no-grad paths (compress, decompress), recomputed only when the dtype,
  // storage or version counter of knots, delta, scale_raw or shift changed since the last call:
  // a decoding step does not pay for the dozen small ops that build the table.
  torch::Tensor cached_knot_values() const;

  struct KnotValuesCache;
  KVSpliceOptions options_;
  bool fitted_ = false;
  std::shared_ptr<KnotValuesCache> knot_values_cache_;
};

TORCH_MODULE(KVSplice);

}  // namespace rakv::nn
