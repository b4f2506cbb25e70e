// KVSplice: spline + PCA compression of the V cache, its fit, and its safetensors file.
#include "rakv/nn/kvsplice.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>

#include "rakv/io/safetensors.h"
#include "rakv/ops.h"

namespace rakv::nn {
namespace {

constexpr const char* kFormat = "rakv-kvsplice/1";

// scale = softplus(scale_raw) + 1e-3 is 1 here.
const double kIdentityScaleRaw = std::log(std::expm1(1.0 - 1e-3));

void check_options(const KVSpliceOptions& o) {
  TORCH_CHECK(o.head_dim >= 1, "KVSplice: head_dim must be >= 1, got ", o.head_dim);
  TORCH_CHECK(o.latent_dim >= 1 && o.latent_dim <= o.head_dim,
              "KVSplice: latent_dim must satisfy 1 <= latent_dim <= head_dim (", o.head_dim,
              "), got ", o.latent_dim);
  TORCH_CHECK(o.num_knots >= 2, "KVSplice: a spline needs num_knots >= 2, got ", o.num_knots);
}

// Per-feature quantiles (0, 1/(K-1), .., 1) of rows [N, D] (linear interpolation between order
// statistics), in float64, made strictly increasing: each knot is at least a small gap above
// the previous one (features with repeated values, e.g. constant ones, would tie).
torch::Tensor quantile_knots(const torch::Tensor& rows, int64_t num_knots) {
  const torch::Tensor sorted = std::get<0>(rows.to(torch::kFloat64).sort(0));
  const int64_t n = sorted.size(0), d = sorted.size(1);
  torch::Tensor knots = torch::empty({d, num_knots}, torch::kFloat64);
  auto out = knots.accessor<double, 2>();
  const auto in = sorted.accessor<double, 2>();
  for (int64_t f = 0; f < d; ++f) {
    const double range = in[n - 1][f] - in[0][f];
    const double magnitude = std::max({std::abs(in[0][f]), std::abs(in[n - 1][f]), 1.0});
    const double gap =
        std::max(1e-3 * range / static_cast<double>(num_knots - 1), 1e-5 * magnitude);
    for (int64_t j = 0; j < num_knots; ++j) {
      const double position = static_cast<double>(j * (n - 1)) / static_cast<double>(num_knots - 1);
      const int64_t lo = static_cast<int64_t>(position);
      const int64_t hi = std::min(lo + 1, n - 1);
      const double frac = position - static_cast<double>(lo);
      double q = in[lo][f] * (1 - frac) + in[hi][f] * frac;
      if (j > 0) {
        q = std::max(q, out[f][j - 1] + gap);
      }
      out[f][j] = q;
    }
  }
  return knots;
}

// Flips each column of `basis` so that its largest-magnitude entry is positive: LAPACK builds may
// differ in the signs of singular vectors, files and tests should not.
torch::Tensor canonical_signs(const torch::Tensor& basis) {
  const torch::Tensor largest = basis.gather(0, basis.abs().argmax(0, true));
  return basis * (1 - 2 * (largest < 0).to(basis.scalar_type()));
}

std::string metadata_field(const io::TensorFile& file, const std::string& key,
                           const std::string& path) {
  const auto it = file.metadata.find(key);
  TORCH_CHECK(it != file.metadata.end(), "KVSplice file ", path, " has no '", key,
              "' metadata entry");
  return it->second;
}

int64_t metadata_int(const io::TensorFile& file, const std::string& key, const std::string& path) {
  const std::string text = metadata_field(file, key, path);
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(used == text.size() && !text.empty(), "KVSplice file ", path, ": metadata '", key,
              "' must be an integer, got '", text, "'");
  return value;
}

}  // namespace

struct KVSpliceImpl::KnotValuesCache {
  std::mutex mutex;
  std::vector<int64_t> key;  // per source tensor: storage address, version, dtype
  torch::Tensor values;
};

KVSpliceImpl::KVSpliceImpl(const KVSpliceOptions& options)
    : options_(options), knot_values_cache_(std::make_shared<KnotValuesCache>()) {
  check_options(options);
  const int64_t d = options.head_dim, k = options.num_knots;
  // Placeholders until fit() or load(): evenly spaced knots, identity spline, leading axes.
  knots = register_buffer("knots", torch::linspace(-1, 1, k).expand({d, k}).contiguous());
  delta = register_parameter("delta", torch::zeros({d, k - 1}));
  scale_raw = register_parameter("scale_raw", torch::full({d}, kIdentityScaleRaw));
  shift = register_parameter("shift", torch::zeros({d}));
  pca_mean = register_buffer("pca_mean", torch::zeros({d}));
  pca_basis =
      register_buffer("pca_basis", torch::eye(d).narrow(1, 0, options.latent_dim).contiguous());
}

void KVSpliceImpl::reset_spline() {
  torch::NoGradGuard no_grad;
  // Equal raw slopes normalise to slope 1: with scale 1 and shift 0, g is the identity.
  delta.zero_();
  scale_raw.fill_(kIdentityScaleRaw);
  shift.zero_();
}

bool KVSpliceImpl::spline_is_usable() const {
  torch::NoGradGuard no_grad;
  const torch::Tensor values = knot_values();
  const int64_t k = values.size(1);
  return torch::isfinite(values).all().item<bool>() &&
         (values.narrow(1, 1, k - 1) > values.narrow(1, 0, k - 1)).all().item<bool>();
}

void KVSpliceImpl::check_fitted(const char* what) const {
  TORCH_CHECK(fitted_, "KVSplice::", what, ": the module is not fitted; call fit() or load()");
}

torch::Tensor KVSpliceImpl::rows_in_module_dtype(const torch::Tensor& x, int64_t width,
                                                 const char* what) const {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == width, "KVSplice::", what, " expects [..., ", width,
              "], got ", x.sizes());
  TORCH_CHECK(x.is_floating_point(), "KVSplice::", what, " expects a floating tensor, got ",
              x.scalar_type());
  TORCH_CHECK(x.device() == knots.device(), "KVSplice::", what, ": input on ", x.device(),
              " but the module on ", knots.device());
  return x.to(knots.scalar_type()).reshape({-1, width});
}

torch::Tensor KVSpliceImpl::knot_values() const {
  return rakv::ops::monotone_spline_knot_values(knots, delta, scale_raw, shift);
}

torch::Tensor KVSpliceImpl::cached_knot_values() const {
  std::vector<int64_t> key;
  for (const torch::Tensor* source : {&knots, &delta, &scale_raw, &shift}) {
    key.push_back(reinterpret_cast<intptr_t>(source->data_ptr()));
    key.push_back(source->_version());
    key.push_back(static_cast<int64_t>(source->scalar_type()));
  }
  KnotValuesCache& cache = *knot_values_cache_;
  const std::lock_guard<std::mutex> lock(cache.mutex);
  if (!cache.values.defined() || key != cache.key) {
    torch::NoGradGuard no_grad;
    cache.values = knot_values();
    cache.key = std::move(key);
  }
  return cache.values;
}

torch::Tensor KVSpliceImpl::spline(const torch::Tensor& x) const {
  if (options_.plain_pca) {
    return x;
  }
  return rakv::ops::monotone_spline(x.to(knots.scalar_type()), knots, knot_values());
}

torch::Tensor KVSpliceImpl::spline_inverse(const torch::Tensor& y) const {
  if (options_.plain_pca) {
    return y;
  }
  return rakv::ops::monotone_spline_inverse(y.to(knots.scalar_type()), knots, knot_values());
}

torch::Tensor KVSpliceImpl::compress(const torch::Tensor& v) const {
  check_fitted("compress");
  torch::NoGradGuard no_grad;
  const torch::Tensor rows = rows_in_module_dtype(v, options_.head_dim, "compress");
  // (g(v) - mu) V_k = g(v) V_k - mu V_k: one GEMM whose bias (beta = -1) is the projected mean.
  const torch::Tensor y = options_.plain_pca ? rows
                                             : rakv::ops::monotone_spline_eval(
                                                   rows, knots, cached_knot_values(), false);
  const torch::Tensor z = torch::addmm(torch::mv(pca_basis.t(), pca_mean), y, pca_basis,
                                       /*beta=*/-1, /*alpha=*/1);
  std::vector<int64_t> shape = v.sizes().vec();
  shape.back() = options_.latent_dim;
  return z.view(shape);
}

torch::Tensor KVSpliceImpl::decompress(const torch::Tensor& z) const {
  check_fitted("decompress");
  torch::NoGradGuard no_grad;
  const torch::Tensor rows = rows_in_module_dtype(z, options_.latent_dim, "decompress");
  const torch::Tensor y = torch::addmm(pca_mean, rows, pca_basis.t());
  std::vector<int64_t> shape = z.sizes().vec();
  shape.back() = options_.head_dim;
  if (options_.plain_pca) {
    return y.view(shape);
  }
  return rakv::ops::monotone_spline_eval(y, knots, cached_knot_values(), true).view(shape);
}

torch::Tensor KVSpliceImpl::forward(const torch::Tensor& v) const {
  return decompress(compress(v));
}

double KVSpliceImpl::reconstruction_error(const torch::Tensor& v) const {
  torch::NoGradGuard no_grad;
  const torch::Tensor rows = rows_in_module_dtype(v, options_.head_dim, "reconstruction_error");
  return (forward(rows).to(torch::kFloat64) - rows.to(torch::kFloat64))
      .square()
      .mean()
      .item<double>();
}

torch::Tensor KVSpliceImpl::fit_loss(const torch::Tensor& x) const {
  const torch::Tensor rows = rows_in_module_dtype(x, options_.head_dim, "fit_loss");
  const torch::Tensor mean = pca_mean.detach(), basis = pca_basis.detach();
  const torch::Tensor values = options_.plain_pca ? torch::Tensor() : knot_values();
  const torch::Tensor y =
      options_.plain_pca ? rows : rakv::ops::monotone_spline(rows, knots, values);
  const torch::Tensor projected = torch::addmm(mean, torch::mm(y - mean, basis), basis.t());
  const torch::Tensor back =
      options_.plain_pca ? projected : rakv::ops::monotone_spline_inverse(projected, knots, values);
  return (back - rows).square().mean();
}

void KVSpliceImpl::fit_pca(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const torch::Tensor rows = rows_in_module_dtype(x, options_.head_dim, "fit_pca");
  TORCH_CHECK(rows.size(0) >= options_.latent_dim, "KVSplice::fit_pca needs at least latent_dim (",
              options_.latent_dim, ") rows, got ", rows.size(0));
  const torch::Tensor y = spline(rows).to(torch::kFloat64);
  const torch::Tensor mean = y.mean(0);
  const torch::Tensor centred = y - mean;
  // The right singular vectors of the centred rows are the singular vectors of their D x D Gram
  // matrix (symmetric positive semi-definite, so U = V): an SVD of D x D instead of N x D,
  // accurate in float64.
  const torch::Tensor gram = torch::mm(centred.t(), centred);
  const torch::Tensor u = std::get<0>(torch::linalg_svd(gram, /*full_matrices=*/false));
  const torch::Tensor basis = canonical_signs(u.narrow(1, 0, options_.latent_dim));
  pca_mean.copy_(mean);
  pca_basis.copy_(basis);
}

KVSpliceFitReport KVSpliceImpl::fit(const torch::Tensor& calib_v, const KVSpliceFitOptions& fo) {
  const auto start = std::chrono::steady_clock::now();
  // The fit differentiates even where the caller runs under a NoGradGuard.
  torch::AutoGradMode enable_grad(true);
  TORCH_CHECK(fo.epochs >= 0 && fo.lr > 0 && fo.weight_decay >= 0 && fo.batch_size >= 0,
              "KVSplice::fit needs epochs >= 0, lr > 0, weight_decay >= 0 and batch_size >= 0, ",
              "got ", fo.epochs, ", ", fo.lr, ", ", fo.weight_decay, " and ", fo.batch_size);
  const torch::Tensor rows = rows_in_module_dtype(calib_v, options_.head_dim, "fit").detach();
  const int64_t n = rows.size(0);
  TORCH_CHECK(n >= std::max<int64_t>(options_.latent_dim, 2), "KVSplice::fit needs at least ",
              std::max<int64_t>(options_.latent_dim, 2), " calibration rows (latent_dim ",
              options_.latent_dim, "), got ", n);
  TORCH_CHECK(torch::isfinite(rows).all().item<bool>(),
              "KVSplice::fit: the calibration V holds NaN or Inf values");
  {
    torch::NoGradGuard no_grad;
    knots.copy_(quantile_knots(rows, options_.num_knots));
  }
  reset_spline();
  fit_pca(rows);
  fitted_ = true;

  KVSpliceFitReport report;
  report.calibration_mse.push_back(reconstruction_error(rows));
  if (options_.plain_pca) {
    report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

  const int64_t batch = fo.batch_size > 0
                            ? std::min(fo.batch_size, n)
                            : std::min({n, int64_t{4096}, std::max<int64_t>(256, n / 8)});
  torch::optim::AdamW optimizer({delta, scale_raw, shift},
                                torch::optim::AdamWOptions(fo.lr).weight_decay(fo.weight_decay));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(fo.seed);
  // The best epoch's state (epoch 0: the identity spline with its PCA).
  const auto snapshot = [this] {
    return std::vector<torch::Tensor>{delta.detach().clone(), scale_raw.detach().clone(),
                                      shift.detach().clone(), pca_mean.clone(), pca_basis.clone()};
  };
  std::vector<torch::Tensor> best = snapshot();
  double best_mse = report.calibration_mse[0];
  for (int64_t epoch = 1; epoch <= fo.epochs && !report.diverged; ++epoch) {
    // The PCA was refitted (detached) on the current spline at the end of the previous epoch.
    const torch::Tensor order = torch::randperm(n, generator, torch::kLong);
    double loss_sum = 0;
    for (int64_t first = 0; first < n && !report.diverged; first += batch) {
      const int64_t count = std::min(batch, n - first);
      const torch::Tensor x = rows.index_select(0, order.narrow(0, first, count));
      optimizer.zero_grad();
      const torch::Tensor loss = fit_loss(x);
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>() * static_cast<double>(count);
      report.diverged = !spline_is_usable();
    }
    if (report.diverged) {
      break;
    }
    report.train_loss.push_back(loss_sum / static_cast<double>(n));
    fit_pca(rows);
    const double mse = reconstruction_error(rows);
    report.calibration_mse.push_back(mse);
    if (mse < best_mse) {
      best_mse = mse;
      best = snapshot();
      report.best_epoch = epoch;
    }
  }
  {
    torch::NoGradGuard no_grad;
    const std::vector<torch::Tensor> targets = {delta, scale_raw, shift, pca_mean, pca_basis};
    for (size_t i = 0; i < targets.size(); ++i) {
      targets[i].copy_(best[i]);
    }
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

int64_t KVSpliceImpl::bytes_per_token_head() const {
  return options_.latent_dim * static_cast<int64_t>(knots.element_size());
}

int64_t KVSpliceImpl::uncompressed_bytes_per_token_head() const {
  return options_.head_dim * static_cast<int64_t>(knots.element_size());
}

io::NamedTensors KVSpliceImpl::state(const std::string& prefix) const {
  check_fitted("save");
  return {{prefix + "knots", knots.detach()},         {prefix + "delta", delta.detach()},
          {prefix + "scale_raw", scale_raw.detach()}, {prefix + "shift", shift.detach()},
          {prefix + "pca_mean", pca_mean.detach()},   {prefix + "pca_basis", pca_basis.detach()}};
}

std::map<std::string, std::string> KVSpliceImpl::metadata() const {
  return {{"format", kFormat},
          {"head_dim", std::to_string(options_.head_dim)},
          {"num_knots", std::to_string(options_.num_knots)},
          {"latent_dim", std::to_string(options_.latent_dim)},
          {"plain_pca", options_.plain_pca ? "true" : "false"}};
}

void KVSpliceImpl::save(const std::string& path) const { io::save_safetensors(path, state(""), metadata()); }

KVSpliceOptions KVSpliceImpl::options_from_metadata(const io::TensorFile& file, const std::string& path,
                                                    std::optional<int64_t> expected_head_dim) {
  KVSpliceOptions options;
  options.head_dim = metadata_int(file, "head_dim", path);
  options.num_knots = metadata_int(file, "num_knots", path);
  options.latent_dim = metadata_int(file, "latent_dim", path);
  const std::string plain = metadata_field(file, "plain_pca", path);
  TORCH_CHECK(plain == "true" || plain == "false", "KVSplice file ", path,
              ": metadata 'plain_pca' must be true or false, got '", plain, "'");
  options.plain_pca = plain == "true";
  TORCH_CHECK(!expected_head_dim || *expected_head_dim == options.head_dim, "KVSplice file ", path,
              " was fitted for head dim ", options.head_dim, ", but head dim ",
              expected_head_dim.value_or(0), " was expected");
  return options;
}

KVSplice KVSpliceImpl::from_state(const KVSpliceOptions& options, const io::TensorFile& file,
                                  const std::string& prefix, const std::string& path) {
  KVSplice module(options);
  const std::vector<std::pair<std::string, torch::Tensor*>> targets = {
      {"knots", &module->knots},         {"delta", &module->delta},
      {"scale_raw", &module->scale_raw}, {"shift", &module->shift},
      {"pca_mean", &module->pca_mean},   {"pca_basis", &module->pca_basis}};
  const auto knots_entry = file.tensors.find(prefix + "knots");
  TORCH_CHECK(knots_entry != file.tensors.end(), "KVSplice file ", path, " has no tensor '", prefix,
              "knots'");
  const torch::ScalarType dtype = knots_entry->second.scalar_type();
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kFloat64, "KVSplice file ", path,
              ": tensors must be float32 or float64, got ", dtype);
  module->to(dtype);
  torch::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    const auto it = file.tensors.find(prefix + name);
    TORCH_CHECK(it != file.tensors.end(), "KVSplice file ", path, " has no tensor '", prefix, name,
                "'");
    const torch::Tensor& stored = it->second;
    TORCH_CHECK(stored.sizes() == target->sizes() && stored.scalar_type() == dtype,
                "KVSplice file ", path, ": tensor '", prefix, name, "' must be ", dtype, " ",
                target->sizes(), " for the metadata's head_dim ", options.head_dim, ", num_knots ",
                options.num_knots, ", latent_dim ", options.latent_dim, "; got ",
                stored.scalar_type(), " ", stored.sizes());
    TORCH_CHECK(torch::isfinite(stored).all().item<bool>(), "KVSplice file ", path, ": tensor '",
                prefix, name, "' holds NaN or Inf values");
    target->copy_(stored);
  }
  const torch::Tensor k = module->knots;
  TORCH_CHECK((k.narrow(1, 1, k.size(1) - 1) > k.narrow(1, 0, k.size(1) - 1)).all().item<bool>(),
              "KVSplice file ", path, ": knots must be strictly increasing along each row");
  TORCH_CHECK(module->spline_is_usable(), "KVSplice file ", path,
              ": its spline parameters give knot values that are not strictly increasing");
  module->fitted_ = true;
  return module;
}

KVSplice KVSpliceImpl::load(const std::string& path, std::optional<int64_t> expected_head_dim) {
  const io::TensorFile file = io::load_safetensors(path);
  const std::string format = metadata_field(file, "format", path);
  TORCH_CHECK(format == kFormat, "KVSplice file ", path, " has format '", format, "', expected '",
              kFormat, "'");
  return from_state(options_from_metadata(file, path, expected_head_dim), file, "", path);
}

}  // namespace rakv::nn
