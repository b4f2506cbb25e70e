// Training throughput benchmark (`rakv bench-train`).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <filesystem>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "rakv/apps/bench_train.h"
#include "rakv/apps/train_step.h"
#include "rakv/io/atomic_file.h"
#include "rakv/io/safetensors.h"
#include "rakv/model/checkpoint.h"
#include "rakv/util/kernel_profile.h"
#include "rakv/util/system_info.h"
#include "rakv/util/timing.h"

namespace rakv::apps {
namespace fs = std::filesystem;

namespace {

// [B, T + 1] tokens: sequence b is (start_b + step_b * t) mod 256 — learnable from context.
torch::Tensor progression_batch(int64_t batch, int64_t block, torch::Generator generator,
                                const torch::Device& device) {
  const auto options = torch::TensorOptions().dtype(torch::kInt64);
  const torch::Tensor start = torch::randint(0, 256, {batch, 1}, generator, options);
  const torch::Tensor step = torch::randint(1, 16, {batch, 1}, generator, options);
  return ((start + step * torch::arange(block + 1, options)) % 256).to(device);
}

}  // namespace

BenchTrainResult bench_train(const BenchTrainOptions& options, std::ostream& log) {
  TORCH_CHECK(options.steps >= 1 && options.warmup >= 0,
              "bench-train needs --steps >= 1 and --warmup >= 0");
  const config::Config& cfg = options.config;
  const model::GPT2Config model_config = model::gpt2_config_from(cfg);
  check_step_config(cfg);
  const bool cuda = cfg.get_string("CONFIG_DEVICE") == "cuda";
  if (cuda && !torch::cuda::is_available()) {
    throw std::runtime_error("CONFIG_DEVICE=cuda but no CUDA device is usable");
  }
  if ((options.profile || !options.profile_trace.empty()) &&
      (!cuda || !util::kernel_profiling_supported())) {
    throw std::runtime_error(
        "bench-train --profile needs CONFIG_DEVICE=cuda in a build with -DRAKV_CUDA=ON");
  }
  if (!options.profile_trace.empty()) {
    // Kineto only logs a trace it cannot write: find out now, not after the run.
    const bool existed = fs::exists(options.profile_trace);
    if (!std::ofstream(options.profile_trace, std::ios::app))
      throw std::runtime_error("bench-train --profile-trace: cannot write " + options.profile_trace);
    if (!existed)
      fs::remove(options.profile_trace);
  }
  const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  const int64_t batch = cfg.get_int("CONFIG_BATCH_SIZE");
  const int64_t block = cfg.get_int("CONFIG_BLOCK_SIZE");
  const int64_t accum = cfg.get_int("CONFIG_GRAD_ACCUM_STEPS");
  const double lr = cfg.get_float("CONFIG_LEARNING_RATE");
  const bool exporting = !options.export_dir.empty();

  torch::manual_seed(cfg.get_int("CONFIG_SEED"));
  model::GPT2 gpt(model_config);
  if (exporting) {
    fs::create_directories(options.export_dir);
    model::save_model((fs::path(options.export_dir) / "init.safetensors").string(), *gpt, cfg, 0);
  }
  gpt->to(device);
  gpt->train();
  StepRunner runner(gpt, cfg, lr);
  torch::Generator generator =
      at::detail::createCPUGenerator(static_cast<uint64_t>(cfg.get_int("CONFIG_SEED")));

  const int64_t total = options.warmup + options.steps;
  std::vector<torch::Tensor> exported;
  std::vector<double> losses;
  util::PeakMemoryProbe probe(device);
  torch::Tensor loss;
  std::chrono::steady_clock::time_point start;
  // With a CUDA graph the step allocates its memory once, while it is captured (the step after
  // the eager warm-up steps; replays allocate nothing): the memory window opens before that.
  const bool profiling = options.profile || !options.profile_trace.empty();
  util::KernelProfile profile;
  const int64_t probe_from = runner.uses_cuda_graph()
                                 ? std::min<int64_t>(options.warmup, StepRunner::kGraphWarmupSteps)
                                 : options.warmup;
  for (int64_t step = 0; step < total; ++step) {
    if (step == probe_from || step == options.warmup)
      util::synchronize(device);
    if (step == probe_from)
      probe.reset();
    if (step == options.warmup) {
      if (profiling)
        profile.start();
      start = std::chrono::steady_clock::now();
    }
    std::vector<torch::Tensor> inputs, targets;
    for (int64_t micro = 0; micro < accum; ++micro) {
      const torch::Tensor tokens = progression_batch(batch, block, generator, device);
      if (exporting)
        exported.push_back(tokens.cpu());
      inputs.push_back(tokens.narrow(1, 0, block));
      targets.push_back(tokens.narrow(1, 1, block));
    }
    loss = runner.step(inputs, targets, lr);
    if (exporting)
      losses.push_back(loss.item<double>());
  }
  util::synchronize(device);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string profile_table =
      profiling ? profile.stop(25, options.steps, 1000.0 * seconds, options.profile_trace) : "";

  BenchTrainResult result;
  result.tokens_per_second = static_cast<double>(options.steps * batch * block * accum) / seconds;
  result.ms_per_step = 1000.0 * seconds / static_cast<double>(options.steps);
  const double peak = util::peak_bf16_flops(device);
  result.mfu = peak > 0 ? training_flops_per_token(*gpt) * result.tokens_per_second / peak : 0.0;
  result.final_loss = loss.item<double>();
  result.peak_memory_gib = static_cast<double>(probe.peak_bytes()) / (1024.0 * 1024.0 * 1024.0);
  result.losses = losses;

  std::ostringstream line;
  line << std::fixed << std::setprecision(1)
       << "rakv bench-train: " << result.tokens_per_second / 1e3 << "k tokens/s, "
       << std::setprecision(2) << result.ms_per_step << " ms/step";
  if (peak > 0)
    line << ", MFU " << std::setprecision(1) << 100 * result.mfu << "%";
  line << ", loss " << std::setprecision(4) << result.final_loss << ", peak memory "
       << std::setprecision(2) << result.peak_memory_gib << " GiB (" << options.steps
       << " steps after " << options.warmup << " warm-up; B=" << batch << "x" << accum
       << ", T=" << block << ", " << device << (runner.uses_cuda_graph() ? ", CUDA graph" : "")
       << ")";
  if (profiling)
    line << " [profiled: times include the profiler's overhead]";
  if (runner.uses_cuda_graph() && options.warmup <= StepRunner::kGraphWarmupSteps)
    line << " [the timed steps include " << StepRunner::kGraphWarmupSteps - options.warmup
         << " eager steps and the capture: use --warmup " << StepRunner::kGraphWarmupSteps + 1
         << " or more for the graph alone]";
  log << line.str() << "\n";
  if (profiling)
    log << "\n" << profile_table;

  if (exporting) {
    io::save_safetensors(
        (fs::path(options.export_dir) / "batches.safetensors").string(),
        {{"tokens", torch::stack(exported).view({total, accum, batch, block + 1})}});
    std::ostringstream csv;
    csv << "step,loss\n" << std::setprecision(8);
    for (size_t i = 0; i < losses.size(); ++i)
      csv << i + 1 << "," << losses[i] << "\n";
    io::write_file_atomically((fs::path(options.export_dir) / "rakv_losses.csv").string(),
                              csv.str());
  }
  if (!options.json_path.empty()) {
    nlohmann::json json = {{"implementation", "rakv"},
                           {"tokens_per_s", result.tokens_per_second},
                           {"ms_per_step", result.ms_per_step},
                           {"mfu", result.mfu},
                           {"final_loss", result.final_loss},
                           {"peak_memory_gib", result.peak_memory_gib},
                           {"cuda_graph", runner.uses_cuda_graph()},
                           {"steps", options.steps},
                           {"warmup", options.warmup},
                           {"batch", batch},
                           {"accum", accum},
                           {"block", block},
                           {"config", cfg.to_minimal_text()}};
    io::write_file_atomically(options.json_path, json.dump(2) + "\n");
  }
  return result;
}

}  // namespace rakv::apps
