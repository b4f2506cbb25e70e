// Per-layer KVSplice calibration, its file format, and generation cache policies.
#include <torch/torch.h>

#include <iomanip>
#include <optional>

#include "rakv/apps/kv_compression.h"
#include "rakv/data/text_corpus.h"
#include "rakv/io/safetensors.h"

namespace rakv::apps {

void save_kvsplice_set(const std::string& path, const KVSpliceSet& set) {
  TORCH_CHECK(!set.layers.empty(), "cannot save an empty KVSplice set");
  io::NamedTensors tensors;
  for (size_t layer = 0; layer < set.layers.size(); ++layer) {
    for (auto& entry : set.layers[layer]->state("layer" + std::to_string(layer) + ".")) tensors.push_back(std::move(entry));
  }
  std::map<std::string, std::string> metadata = set.layers.front()->metadata();
  metadata["format"] = kKVSpliceSetFormat;
  metadata["layers"] = std::to_string(set.layers.size());
  io::save_safetensors(path, tensors, metadata);
}

KVSpliceSet load_kvsplice_set(const std::string& path, const model::GPT2Config& model) {
  const io::TensorFile file = io::load_safetensors(path);
  auto format = file.metadata.find("format");
  if (format == file.metadata.end() || format->second != kKVSpliceSetFormat) {
    throw std::runtime_error(path + ": not a rakv KVSplice file written by `rakv calibrate` (format " +
                             (format == file.metadata.end() ? std::string("missing") : "'" + format->second + "'") + ")");
  }
  const int64_t model_head_dim = model.n_embd / model.n_head;
  const nn::KVSpliceOptions options = nn::KVSpliceImpl::options_from_metadata(file, path, model_head_dim);
  auto layers = file.metadata.find("layers");
  if (layers == file.metadata.end() || layers->second != std::to_string(model.n_layer)) {
    throw std::runtime_error(path + ": KVSplice file has " +
                             (layers == file.metadata.end() ? std::string("no") : layers->second) +
                             " layers but the model has " + std::to_string(model.n_layer));
  }
  KVSpliceSet set;
  set.head_dim = options.head_dim;
  set.latent_dim = options.latent_dim;
  for (int64_t layer = 0; layer < model.n_layer; ++layer) {
    set.layers.push_back(nn::KVSpliceImpl::from_state(options, file, "layer" + std::to_string(layer) + ".", path));
  }
  return set;
}

std::vector<torch::Tensor> collect_layer_values(model::GPT2& model, const std::vector<uint8_t>& text, int64_t tokens) {
  torch::NoGradGuard no_grad;
  model->eval();
  const auto& config = model->config();
  const int64_t window = config.block_size;
  const int64_t windows = std::max<int64_t>(1, std::min<int64_t>(tokens, static_cast<int64_t>(text.size())) / window);
  TORCH_CHECK(static_cast<int64_t>(text.size()) >= window, "the text holds ", text.size(),
              " tokens, fewer than one block of ", window);
  torch::Tensor idx = torch::empty({windows, window}, torch::kInt64);
  auto a = idx.accessor<int64_t, 2>();
  for (int64_t w = 0; w < windows; ++w) {
    for (int64_t t = 0; t < window; ++t) a[w][t] = text[w * window + t];
  }
  model::GenerationCache cache = model->new_cache();
  model->forward_cached(idx.to(model->wte->weight.device()), cache);
  std::vector<torch::Tensor> values;
  for (const auto& layer : cache.layers) values.push_back(layer.values().reshape({-1, layer.values().size(-1)}).cpu());
  return values;
}

KVSpliceSet calibrate_kvsplice(model::GPT2& model, const std::vector<uint8_t>& text, const CalibrationOptions& options,
                               std::ostream& log) {
  const auto& config = model->config();
  const int64_t head_dim = config.n_embd / config.n_head;
  if (options.latent_dim < 1 || options.latent_dim > head_dim) {
    throw std::runtime_error("KVSplice latent size must be in [1, head dim = " + std::to_string(head_dim) + "], got " +
                             std::to_string(options.latent_dim));
  }
  const std::vector<torch::Tensor> values = collect_layer_values(model, text, options.tokens);
  KVSpliceSet set;
  set.head_dim = head_dim;
  set.latent_dim = options.latent_dim;
  for (size_t layer = 0; layer < values.size(); ++layer) {
    nn::KVSpliceOptions splice_options;
    splice_options.head_dim = head_dim;
    splice_options.latent_dim = options.latent_dim;
    splice_options.num_knots = options.knots;
    splice_options.plain_pca = options.plain_pca;
    nn::KVSplice splice(splice_options);
    const nn::KVSpliceFitReport report = splice->fit(values[layer], options.fit);
    log << "  layer " << layer << ": " << values[layer].size(0) << " V vectors, reconstruction MSE "
        << std::setprecision(4) << report.calibration_mse.front() << " (PCA) -> "
        << report.calibration_mse[report.best_epoch] << " (spline, epoch " << report.best_epoch << ")\n";
    set.layers.push_back(splice);
  }
  return set;
}

std::vector<nn::KVCachePolicy> cache_policies(const config::Config& config, int64_t n_layer, double keep_ratio,
                                              const KVSpliceSet* set) {
  if (keep_ratio <= 0 || keep_ratio > 1) {
    throw std::runtime_error("KV budget (keep ratio) must be in (0, 1], got " + std::to_string(keep_ratio));
  }
  std::vector<nn::KVCachePolicy> policies(n_layer);
  const int64_t interval = config.get_int("CONFIG_KV_PRUNE_INTERVAL");
  for (int64_t layer = 0; layer < n_layer; ++layer) {
    auto& p = policies[layer];
    p.keep_ratio = keep_ratio;
    p.k_min = config.get_int("CONFIG_KV_K_MIN");
    p.recency = config.get_int("CONFIG_KV_RECENCY");
    p.interval = interval > 0 ? interval : 64;
    p.exposure_correction = config.get_bool("CONFIG_KV_EXPOSURE_CORRECT");
    if (set != nullptr) p.kvsplice = set->layers.at(layer);
  }
  return policies;
}

std::vector<nn::KVCachePolicy> generation_policies(model::GPT2& model, const config::Config& config, double budget,
                                                   const std::string& kvsplice_file, std::ostream& log) {
  const auto& model_config = model->config();
  std::optional<KVSpliceSet> set;
  if (!kvsplice_file.empty()) {
    set = load_kvsplice_set(kvsplice_file, model_config);
  } else if (config.get_bool("CONFIG_KVSPLICE")) {
    CalibrationOptions calibration;
    calibration.latent_dim = config.get_int("CONFIG_KVSPLICE_LATENT");
    calibration.knots = config.get_int("CONFIG_KVSPLICE_KNOTS");
    calibration.fit.epochs = config.get_int("CONFIG_KVSPLICE_EPOCHS");
    calibration.fit.seed = static_cast<uint64_t>(config.get_int("CONFIG_SEED"));
    const data::TextCorpus corpus =
        data::load_corpus(config.get_string("CONFIG_DATA"), config.get_float("CONFIG_VAL_FRACTION"));
    log << "fitting a KVSplice per layer (CONFIG_KVSPLICE=y, latent " << calibration.latent_dim << ") on "
        << calibration.tokens << " tokens of the training text\n";
    set = calibrate_kvsplice(model, corpus.train, calibration, log);
  }
  return cache_policies(config, model_config.n_layer, budget, set ? &*set : nullptr);
}

}  // namespace rakv::apps
