// The training loop: AdamW, warm-up + cosine, clipping, accumulation, periodic evaluation and
// atomic checkpoints, delayed reciprocal-gate activation, deterministic and resumable.
#include <torch/torch.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <numbers>
#include <sstream>

#include "rakv/apps/generate.h"
#include "rakv/apps/kv_compression.h"
#include "rakv/apps/train.h"
#include "rakv/apps/train_step.h"
#include "rakv/data/text_corpus.h"
#include "rakv/io/atomic_file.h"
#include "rakv/model/checkpoint.h"
#include "rakv/util/progress.h"
#include "rakv/util/system_info.h"

namespace rakv::apps {
namespace fs = std::filesystem;

namespace {

constexpr const char* kLogHeader = "step,train_loss,val_loss,lr,tokens_per_s";

// SplitMix64: decorrelates the per-step seeds derived from one user seed.
uint64_t mix_seed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t batch_seed(uint64_t seed, int64_t step, int64_t micro) {
  return mix_seed(mix_seed(seed) ^ mix_seed(static_cast<uint64_t>(step) * 1000003ull +
                                            static_cast<uint64_t>(micro)));
}

std::string format_number(double value, int precision) {
  std::ostringstream out;
  out << std::setprecision(precision) << value;
  return out.str();
}

std::string format_rate(double tokens_per_second) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (tokens_per_second >= 1e6) {
    out << tokens_per_second / 1e6 << "M";
  } else {
    out << tokens_per_second / 1e3 << "k";
  }
  return out.str() + " tok/s";
}

torch::Device device_from(const config::Config& cfg) {
  if (cfg.get_string("CONFIG_DEVICE") == "cpu")
    return torch::kCPU;
  if (!torch::cuda::is_available()) {
    throw std::runtime_error(
        "CONFIG_DEVICE=cuda but no CUDA device is usable (this build or machine has no CUDA; "
        "rebuild with -DRAKV_CUDA=ON on a GPU machine, or set CONFIG_DEVICE=cpu)");
  }
  return torch::kCUDA;
}

struct ResumePoint {
  config::Config config;
  int64_t step = 0;
  std::map<std::string, torch::Tensor> tensors;
  std::string path;
};

ResumePoint read_resume_point(const TrainOptions& options) {
  ResumePoint point;
  point.path = (fs::path(options.out_dir) / "checkpoint.safetensors").string();
  if (!fs::exists(point.path)) {
    throw std::runtime_error("--resume: no training checkpoint at " + point.path);
  }
  io::TensorFile file = io::load_safetensors(point.path);
  const model::CheckpointInfo info = model::checkpoint_info(file, point.path);
  if (info.kind != "training") {
    throw std::runtime_error(point.path + ": holds only model weights, not a training state");
  }
  point.config = info.config;
  for (const auto& assignment : options.config_overrides)
    point.config.apply_assignment(assignment);
  point.step = info.step;
  point.tensors = std::move(file.tensors);
  return point;
}

// Keeps the log rows up to `step` (a resumed run rewrites the steps after its checkpoint).
void truncate_log(const std::string& path, int64_t step) {
  std::ifstream in(path);
  std::string kept = std::string(kLogHeader) + "\n";
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      header = false;
      continue;
    }
    int64_t row_step = -1;
    const auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), row_step);
    if (ec == std::errc() && end != line.data() + line.size() && *end == ',' && row_step <= step) {
      kept += line + "\n";
    }
  }
  io::write_file_atomically(path, kept);
}

}  // namespace

double learning_rate_at(int64_t step, int64_t warmup, int64_t total, double peak, double floor) {
  if (warmup > 0 && step <= warmup)
    return peak * static_cast<double>(step) / static_cast<double>(warmup);
  if (step >= total)
    return floor;
  const double progress = static_cast<double>(step - warmup) /
                          static_cast<double>(std::max<int64_t>(1, total - warmup));
  return floor + 0.5 * (peak - floor) * (1.0 + std::cos(std::numbers::pi * progress));
}

TrainResult train(const TrainOptions& options, std::ostream& log) {
  if (options.out_dir.empty())
    throw std::runtime_error("train: an output directory is required (--out)");
  // Everything that can be wrong with the inputs is checked before out_dir is touched.
  ResumePoint resume;
  config::Config cfg = options.config;
  if (options.resume) {
    resume = read_resume_point(options);
    cfg = resume.config;
  }
  const model::GPT2Config model_config = model::gpt2_config_from(cfg);
  check_step_config(cfg);
  const torch::Device device = device_from(cfg);
  const uint64_t seed = static_cast<uint64_t>(cfg.get_int("CONFIG_SEED"));
  const int64_t batch = cfg.get_int("CONFIG_BATCH_SIZE");
  const int64_t block = cfg.get_int("CONFIG_BLOCK_SIZE");
  const int64_t accum = cfg.get_int("CONFIG_GRAD_ACCUM_STEPS");
  const int64_t max_iters = cfg.get_int("CONFIG_MAX_ITERS");
  const int64_t warmup = cfg.get_int("CONFIG_WARMUP_ITERS");
  const int64_t eval_interval = cfg.get_int("CONFIG_EVAL_INTERVAL");
  const int64_t eval_iters = cfg.get_int("CONFIG_EVAL_ITERS");
  const double peak_lr = cfg.get_float("CONFIG_LEARNING_RATE");
  const double min_lr = cfg.get_float("CONFIG_MIN_LR");
  const int64_t gate_warmup =
      cfg.get_bool("CONFIG_RA") ? cfg.get_int("CONFIG_RA_GATE_WARMUP_STEPS") : 0;
  if (model_config.vocab_size < 256) {
    throw config::ConfigError("CONFIG_VOCAB_SIZE (" + std::to_string(model_config.vocab_size) +
                              ") must be at least 256 for byte-level text");
  }
  if (resume.step > max_iters) {
    throw std::runtime_error("--resume: the checkpoint is at step " + std::to_string(resume.step) +
                             ", past CONFIG_MAX_ITERS=" + std::to_string(max_iters));
  }
  const data::TextCorpus corpus =
      data::load_corpus(cfg.get_string("CONFIG_DATA"), cfg.get_float("CONFIG_VAL_FRACTION"));
  data::sample_batch(corpus.val, 1, block, 0);  // throws if the validation text is too short
  data::sample_batch(corpus.train, 1, block, 0);
  const int64_t last_step = std::min(max_iters, options.stop_after.value_or(max_iters));
  if (last_step <= resume.step) {
    throw std::runtime_error("nothing to do: the run is already at step " +
                             std::to_string(resume.step));
  }

  fs::create_directories(options.out_dir);
  const std::string model_path = (fs::path(options.out_dir) / "model.safetensors").string();
  const std::string checkpoint_path =
      (fs::path(options.out_dir) / "checkpoint.safetensors").string();
  const std::string log_path = (fs::path(options.out_dir) / "log.csv").string();
  io::write_file_atomically((fs::path(options.out_dir) / "config").string(), cfg.to_text());

  // Small CPU models: LibTorch's OpenMP pool and OpenBLAS's threads fight over the cores
  // (measured 3.1k vs 7.0k tokens/s on 2 cores); let BLAS own them unless the user chose.
  if (device.is_cpu() && std::getenv("OMP_NUM_THREADS") == nullptr)
    at::set_num_threads(1);

  torch::manual_seed(seed);
  model::GPT2 gpt(model_config);
  if (options.resume)
    model::load_module_state(*gpt, resume.tensors, resume.path, "model.");
  gpt->to(device);
  gpt->train();

  StepRunner runner(gpt, cfg, peak_lr);
  if (options.resume)
    model::load_adamw_state(runner.optimizer(), *gpt, resume.tensors, resume.path);

  const bool gates_frozen_at_start = gate_warmup > 0 && resume.step < gate_warmup;
  if (gates_frozen_at_start) {
    for (auto& layer : gpt->reciprocal_attention_layers())
      layer->freeze_reciprocal_gates();
  }

  auto evaluate = [&]() {
    torch::NoGradGuard no_grad;
    gpt->eval();
    double total = 0;
    for (int64_t i = 0; i < eval_iters; ++i) {
      auto [x, y] = data::sample_batch(corpus.val, batch, block, batch_seed(~seed, -1, i));
      total += gpt->loss(x.to(device), y.to(device)).item<double>();
    }
    gpt->train();
    return total / static_cast<double>(eval_iters);
  };

  if (options.resume) {
    truncate_log(log_path, resume.step);
  } else {
    io::write_file_atomically(log_path, std::string(kLogHeader) + "\n");
  }
  std::ofstream csv(log_path, std::ios::app);
  if (!csv)
    throw std::runtime_error(log_path + ": cannot open for appending");

  int64_t parameters = 0;
  for (const auto& p : gpt->parameters())
    parameters += p.numel();
  log << "rakv train: " << format_number(static_cast<double>(parameters) / 1e6, 3)
      << "M parameters, " << model_config.n_layer << " layers (RA "
      << gpt->reciprocal_attention_layers().size() << ", R-MLP "
      << gpt->reciprocal_mlp_layers().size() << "), T=" << block << ", batch " << batch << "x"
      << accum << ", " << max_iters << " steps on " << device
      << (runner.uses_cuda_graph() ? " (CUDA graph of the step)" : "") << "\n"
      << "data: " << corpus.description << "\n";
  if (options.resume)
    log << "resuming from " << resume.path << " at step " << resume.step << "\n";

  TrainResult result;
  result.first_step = resume.step;
  if (!options.resume) {
    result.initial_val_loss = evaluate();
    csv << 0 << ",," << format_number(result.initial_val_loss, 8) << "," << 0 << ",\n"
        << std::flush;
    log << "step 0: val loss " << format_number(result.initial_val_loss, 4) << "\n";
  }

  util::ProgressBar progress("train", last_step - resume.step, std::cerr, options.progress);
  const double flops_per_token = training_flops_per_token(*gpt);
  const double peak_flops = util::peak_bf16_flops(device);
  const auto start = std::chrono::steady_clock::now();
  // Steps whose loss is still on the device: on CUDA it is read back every kFlushEvery steps
  // (one synchronisation), on the CPU after every step.
  const int64_t flush_every = device.is_cuda() ? 16 : 1;
  struct PendingStep {
    int64_t step;
    torch::Tensor loss;
    double lr;
  };
  std::vector<PendingStep> pending;
  auto window_start = std::chrono::steady_clock::now();
  int64_t window_tokens = 0;
  int64_t tokens_seen = 0;
  double train_loss = 0;
  double val_loss = std::nan("");
  double last_rate = 0;
  int64_t last_checkpoint = resume.step;
  for (int64_t step = resume.step + 1; step <= last_step; ++step) {
    torch::manual_seed(batch_seed(seed, step, -1));  // dropout: a function of (seed, step) only
    const double lr = learning_rate_at(step, warmup, max_iters, peak_lr, min_lr);
    std::vector<torch::Tensor> inputs, targets;
    for (int64_t micro = 0; micro < accum; ++micro) {
      auto [x, y] = data::sample_batch(corpus.train, batch, block, batch_seed(seed, step, micro));
      inputs.push_back(x.to(device, /*non_blocking=*/true));
      targets.push_back(y.to(device, /*non_blocking=*/true));
    }
    pending.push_back({step, runner.step(inputs, targets, lr), lr});
    if (gate_warmup > 0 && step == gate_warmup) {
      for (auto& layer : gpt->reciprocal_attention_layers())
        layer->unfreeze_reciprocal_gates();
      runner.invalidate_graph();  // w_rec trains from now on: the captured step lacks it
      log << (options.progress ? "\n" : "") << "step " << step
          << ": reciprocal gates activated (w_rec = 0.1)\n";
    }
    window_tokens += batch * block * accum;
    tokens_seen += batch * block * accum;
    const bool checkpoint_step = step % eval_interval == 0 || step == max_iters;
    if (!checkpoint_step && static_cast<int64_t>(pending.size()) < flush_every && step != last_step)
      continue;

    // Read the pending losses back (the one synchronisation of the window).
    std::vector<torch::Tensor> losses;
    for (const auto& p : pending)
      losses.push_back(p.loss);
    const torch::Tensor host_losses = torch::stack(losses).to(torch::kCPU, torch::kFloat64);
    const double window_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
    last_rate = static_cast<double>(window_tokens) / window_seconds;
    // A non-finite loss stops the run before anything of these steps is written.
    auto check_finite = [&](double loss, int64_t at, const std::string& what) {
      if (std::isfinite(loss))
        return;
      throw std::runtime_error("training diverged at step " + std::to_string(at) + " (" + what +
                               " is " + format_number(loss, 4) +
                               "); lower CONFIG_LEARNING_RATE or enable CONFIG_GRAD_CLIP");
    };
    for (size_t i = 0; i < pending.size(); ++i)
      check_finite(host_losses[i].item<double>(), pending[i].step, "loss");
    train_loss = host_losses[-1].item<double>();
    std::string val_field;
    if (checkpoint_step) {
      val_loss = evaluate();
      check_finite(val_loss, step,
                   "validation loss");  // the step's update made the weights non-finite
      val_field = format_number(val_loss, 8);
    }
    for (size_t i = 0; i < pending.size(); ++i) {
      csv << pending[i].step << "," << format_number(host_losses[i].item<double>(), 8) << ","
          << (i + 1 == pending.size() ? val_field : "") << "," << format_number(pending[i].lr, 6)
          << "," << format_number(last_rate, 6) << "\n";
    }
    csv << std::flush;
    pending.clear();
    // Log row, model, then the resume point: a kill in between leaves the log and the model
    // ahead of the checkpoint (a resume rewrites both), never behind it.
    if (checkpoint_step) {
      model::save_model(model_path, *gpt, cfg, step);
      model::save_training_checkpoint(checkpoint_path, *gpt, runner.optimizer(), cfg, step);
      last_checkpoint = step;
    }
    std::string status = "loss " + format_number(train_loss, 4);
    if (!std::isnan(val_loss))
      status += " val " + format_number(val_loss, 4);
    status += " | " + format_rate(last_rate);
    if (peak_flops > 0)
      status += " | MFU " + format_number(100 * flops_per_token * last_rate / peak_flops, 3) + "%";
    progress.update(step - resume.step, status);
    window_start = std::chrono::steady_clock::now();
    window_tokens = 0;
  }
  if (last_checkpoint != last_step) {
    model::save_model(model_path, *gpt, cfg, last_step);
    model::save_training_checkpoint(checkpoint_path, *gpt, runner.optimizer(), cfg, last_step);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.tokens_per_second = static_cast<double>(tokens_seen) / result.seconds;
  result.last_step = last_step;
  result.final_train_loss = train_loss;
  result.final_val_loss = std::isnan(val_loss) ? evaluate() : val_loss;
  progress.finish("loss " + format_number(train_loss, 4) + " val " +
                  format_number(result.final_val_loss, 4) + " | " +
                  format_rate(result.tokens_per_second));
  log << "trained " << last_step - resume.step << " steps in "
      << util::format_duration(result.seconds) << " (" << format_rate(result.tokens_per_second)
      << "); val loss "
      << (options.resume ? "" : format_number(result.initial_val_loss, 4) + " -> ")
      << format_number(result.final_val_loss, 4) << "\nwrote " << model_path << ", "
      << checkpoint_path << ", " << log_path << "\n";

  if (options.sample && cfg.get_int("CONFIG_SAMPLE_TOKENS") > 0) {
    gpt->eval();
    SamplingOptions sampling;
    sampling.tokens = cfg.get_int("CONFIG_SAMPLE_TOKENS");
    sampling.temperature = cfg.get_float("CONFIG_TEMPERATURE");
    sampling.top_k = cfg.get_int("CONFIG_TOP_K");
    sampling.seed = seed;
    const auto policies = generation_policies(gpt, cfg, cfg.get_float("CONFIG_KV_BUDGET"), "", log);
    const GenerationResult generated =
        generate(gpt, cfg.get_string("CONFIG_SAMPLE_PROMPT"), sampling, policies);
    result.sample_text = cfg.get_string("CONFIG_SAMPLE_PROMPT") + generated.text;
    log << "sample: " << sampling.tokens << " tokens; KV cache " << generated.cache_bytes
        << " bytes vs a full cache of " << generated.full_cache_bytes << " bytes\n";
  }
  return result;
}

}  // namespace rakv::apps
