// Streaming perplexity under KV budgets and KVSplice compression (`rakv eval`).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "rakv/apps/eval.h"
#include "rakv/apps/kv_compression.h"
#include "rakv/data/text_corpus.h"
#include "rakv/io/atomic_file.h"
#include "rakv/model/checkpoint.h"
#include "rakv/util/plot.h"

namespace rakv::apps {
namespace fs = std::filesystem;

namespace {

// Inputs and targets of the evaluation windows: [W, block] each.
std::pair<torch::Tensor, torch::Tensor> windows(const std::vector<uint8_t>& text, int64_t tokens, int64_t block) {
  const int64_t available = (static_cast<int64_t>(text.size()) - 1) / block;
  const int64_t count = std::min(available, std::max<int64_t>(1, tokens / block));
  if (count < 1) {
    throw std::runtime_error("the validation text holds " + std::to_string(text.size()) +
                             " tokens, fewer than one block of " + std::to_string(block + 1));
  }
  torch::Tensor x = torch::empty({count, block}, torch::kInt64);
  torch::Tensor y = torch::empty({count, block}, torch::kInt64);
  auto xa = x.accessor<int64_t, 2>();
  auto ya = y.accessor<int64_t, 2>();
  for (int64_t w = 0; w < count; ++w) {
    for (int64_t t = 0; t < block; ++t) {
      xa[w][t] = text[w * block + t];
      ya[w][t] = text[w * block + t + 1];
    }
  }
  return {x, y};
}

std::string format(double value, int precision) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << value;
  return out.str();
}

}  // namespace

StreamingResult streaming_perplexity(model::GPT2& model, const std::vector<uint8_t>& text, int64_t tokens,
                                     const std::vector<nn::KVCachePolicy>& policies) {
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Device device = model->wte->weight.device();
  auto [x, y] = windows(text, tokens, model->config().block_size);
  x = x.to(device);
  y = y.to(device);
  model::GenerationCache cache = model->new_cache(policies);
  double nll = 0;
  StreamingResult result;
  for (int64_t t = 0; t < x.size(1); ++t) {
    const torch::Tensor logits = model->forward_cached(x.narrow(1, t, 1), cache).squeeze(1).to(torch::kFloat32);
    nll += torch::nn::functional::cross_entropy(logits, y.select(1, t),
                                                torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
               .item<double>();
  }
  // Per sequence: every window holds the same number of entries.
  result.cache_bytes = cache.bytes() / x.size(0);
  result.full_cache_bytes = cache.full_bytes() / x.size(0);
  result.perplexity = std::exp(nll / static_cast<double>(x.numel()));
  return result;
}

double full_perplexity(model::GPT2& model, const std::vector<uint8_t>& text, int64_t tokens) {
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Device device = model->wte->weight.device();
  const auto [x, y] = windows(text, tokens, model->config().block_size);
  return std::exp(model->loss(x.to(device), y.to(device)).item<double>());
}

std::vector<EvalRow> run_eval(const EvalOptions& options, std::ostream& log) {
  if (options.out_dir.empty()) throw std::runtime_error("eval: an output directory is required (--out)");
  if (options.keep_ratios.empty() && options.latents.empty() && options.kvsplice_file.empty()) {
    throw std::runtime_error("eval: nothing to evaluate (give --kv-keep-ratios, --kvsplice or --kvsplice-latents)");
  }
  for (double ratio : options.keep_ratios) {
    if (!(ratio > 0 && ratio <= 1)) {
      throw std::runtime_error("eval: keep ratios must be in (0, 1], got " + std::to_string(ratio));
    }
  }
  model::LoadedModel loaded = model::load_model(options.checkpoint);
  const auto& model_config = loaded.model->config();
  const int64_t head_dim = model_config.n_embd / model_config.n_head;
  for (int64_t latent : options.latents) {
    if (latent < 1 || latent > head_dim) {
      throw std::runtime_error("eval: KVSplice latent sizes must be in [1, head dim = " + std::to_string(head_dim) +
                               "], got " + std::to_string(latent));
    }
  }
  std::optional<KVSpliceSet> file_set;
  if (!options.kvsplice_file.empty()) file_set = load_kvsplice_set(options.kvsplice_file, model_config);
  const data::TextCorpus corpus =
      data::load_corpus(loaded.config.get_string("CONFIG_DATA"), loaded.config.get_float("CONFIG_VAL_FRACTION"));
  fs::create_directories(options.out_dir);

  std::vector<EvalRow> rows;
  const auto evaluate = [&](const std::string& setting, double keep, const KVSpliceSet* set) {
    const auto policies = cache_policies(loaded.config, model_config.n_layer, keep, set);
    const StreamingResult r = streaming_perplexity(loaded.model, corpus.val, options.tokens, policies);
    EvalRow row;
    row.setting = setting;
    row.keep_ratio = keep;
    if (set != nullptr) row.latent = set->latent_dim;
    row.perplexity = r.perplexity;
    row.cache_bytes = r.cache_bytes;
    row.full_cache_bytes = r.full_cache_bytes;
    rows.push_back(row);
    log << "  " << std::left << std::setw(18) << setting << " ppl " << format(r.perplexity, 4) << "  cache "
        << r.cache_bytes << " / " << r.full_cache_bytes << " bytes\n";
  };
  log << "rakv eval: " << options.checkpoint << " (step " << loaded.step << "), " << options.tokens
      << " validation tokens, streaming\n";
  for (double keep : options.keep_ratios) evaluate("keep=" + format(keep, 2), keep, nullptr);
  // Budgets floor at CONFIG_KV_K_MIN: with a short context several ratios can keep the same cache,
  // and their equal perplexities would otherwise read as "the ratio does not matter".
  for (size_t j = 1; j < rows.size(); ++j) {
    const auto same = std::find_if(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(j),
                                   [&](const EvalRow& row) { return row.cache_bytes == rows[j].cache_bytes; });
    if (same == rows.begin() + static_cast<std::ptrdiff_t>(j)) continue;
    log << "  note: " << same->setting << " and " << rows[j].setting << " keep the same cache ("
        << rows[j].cache_bytes << " bytes): the budget is floored at CONFIG_KV_K_MIN="
        << loaded.config.get_int("CONFIG_KV_K_MIN") << " tokens or the context is too short to tell them apart\n";
  }
  if (file_set) evaluate("kvsplice=" + std::to_string(file_set->latent_dim), 1.0, &*file_set);
  if (!options.latents.empty()) {
    log << "calibrating a KVSplice per latent size on " << options.calibration_tokens
        << " tokens of the training split (no --kvsplice file given)\n";
  }
  for (int64_t latent : options.latents) {
    CalibrationOptions calibration;
    calibration.tokens = options.calibration_tokens;
    calibration.latent_dim = latent;
    calibration.knots = loaded.config.get_int("CONFIG_KVSPLICE_KNOTS");
    calibration.fit.epochs = loaded.config.get_int("CONFIG_KVSPLICE_EPOCHS");
    calibration.fit.seed = static_cast<uint64_t>(loaded.config.get_int("CONFIG_SEED"));
    std::ostringstream fit_log;
    const KVSpliceSet set = calibrate_kvsplice(loaded.model, corpus.train, calibration, fit_log);
    evaluate("kvsplice=" + std::to_string(latent), 1.0, &set);
  }

  std::string csv = std::string(kEvalCsvHeader) + "\n";
  util::PlotSeries eviction{"KV eviction (keep ratio)", {}};
  util::PlotSeries splice{"KVSplice (latent)", {}};
  for (const auto& row : rows) {
    const double compression = static_cast<double>(row.full_cache_bytes) / static_cast<double>(row.cache_bytes);
    csv += row.setting + "," + format(row.keep_ratio, 4) + "," + (row.latent ? std::to_string(*row.latent) : "") + "," +
           format(row.perplexity, 6) + "," + std::to_string(row.cache_bytes) + "," +
           std::to_string(row.full_cache_bytes) + "," + format(compression, 4) + "\n";
    (row.latent ? splice : eviction).points.emplace_back(static_cast<double>(row.cache_bytes), row.perplexity);
  }
  io::write_file_atomically((fs::path(options.out_dir) / "eval.csv").string(), csv);
  std::vector<util::PlotSeries> series;
  for (auto* s : {&eviction, &splice}) {
    if (!s->points.empty()) series.push_back(*s);
  }
  util::plot_png((fs::path(options.out_dir) / "eval.png").string(),
                 {"perplexity vs KV cache size (" + options.checkpoint + ")", "KV cache bytes", "validation perplexity",
                  true, false},
                 series);
  log << "wrote " << (fs::path(options.out_dir) / "eval.csv").string() << " and eval.png\n";
  return rows;
}

}  // namespace rakv::apps
