// `rakv generate`: sample text from a checkpoint with a KV cache.
#include <iostream>
#include <memory>
#include <optional>

#include "commands.h"
#include "rakv/apps/generate.h"
#include "rakv/apps/kv_compression.h"
#include "rakv/model/checkpoint.h"
#include "validators.h"

namespace rakv::cli {
namespace {

struct GenerateArgs {
  std::string checkpoint;
  std::string prompt;
  std::optional<int64_t> tokens;
  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<uint64_t> seed;
  std::optional<double> kv_budget;
  std::string kvsplice;
};

int run_generate(const GenerateArgs& args) {
  model::LoadedModel loaded = model::load_model(args.checkpoint);
  apps::SamplingOptions options;
  options.tokens = args.tokens.value_or(loaded.config.get_int("CONFIG_SAMPLE_TOKENS"));
  options.temperature = args.temperature.value_or(loaded.config.get_float("CONFIG_TEMPERATURE"));
  options.top_k = args.top_k.value_or(loaded.config.get_int("CONFIG_TOP_K"));
  options.seed = args.seed.value_or(static_cast<uint64_t>(loaded.config.get_int("CONFIG_SEED")));
  const double budget = args.kv_budget.value_or(loaded.config.get_float("CONFIG_KV_BUDGET"));
  const auto policies = apps::generation_policies(loaded.model, loaded.config, budget, args.kvsplice, std::cerr);
  const apps::GenerationResult result = apps::generate(loaded.model, args.prompt, options, policies);
  std::cout << args.prompt << result.text << "\n";
  std::cerr << "generated " << options.tokens << " tokens in " << result.seconds << " s; KV cache "
            << result.cache_bytes << " bytes vs a full cache of " << result.full_cache_bytes << " bytes ("
            << (result.cache_bytes > 0 ? static_cast<double>(result.full_cache_bytes) / result.cache_bytes : 1.0)
            << "x smaller; budget " << budget << (policies.front().kvsplice ? ", KVSplice V" : "") << ")\n";
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a checkpoint (KV-cached sampling)");
  cmd->add_option("--checkpoint", args->checkpoint, "model.safetensors written by rakv train")->required();
  cmd->add_option("--prompt", args->prompt, "Text to continue");
  cmd->add_option("--tokens", args->tokens, "Tokens (bytes) to generate [CONFIG_SAMPLE_TOKENS]")
      ->check(kNonNegative);
  cmd->add_option("--temperature", args->temperature, "Sampling temperature, 0 = greedy [CONFIG_TEMPERATURE]")
      ->check(kNonNegative);
  cmd->add_option("--top-k", args->top_k, "Sample among the k most likely tokens, 0 = all [CONFIG_TOP_K]")
      ->check(kNonNegative);
  cmd->add_option("--seed", args->seed, "Random seed [CONFIG_SEED]")->check(kNonNegative);
  cmd->add_option("--kv-budget", args->kv_budget,
                  "Fraction of the tokens whose K and V the cache keeps, in (0, 1] [CONFIG_KV_BUDGET]")
      ->check(kPositive);
  cmd->add_option("--kvsplice", args->kvsplice, "KVSplice file from rakv calibrate: V held compressed")
      ->check(CLI::ExistingFile);
  cmd->callback([&run, args] { run = [args] { return run_generate(*args); }; });
}

}  // namespace rakv::cli
