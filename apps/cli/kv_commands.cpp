// `rakv calibrate` (fit a KVSplice per layer of a trained model) and `rakv eval` (perplexity under
// KV budgets and KVSplice compression).
#include <iostream>
#include <memory>

#include "commands.h"
#include "rakv/apps/eval.h"
#include "rakv/apps/kv_compression.h"
#include "rakv/data/text_corpus.h"
#include "rakv/model/checkpoint.h"

namespace rakv::cli {
namespace {

struct CalibrateArgs {
  std::string checkpoint;
  std::string out;
  std::string split = "val";
  apps::CalibrationOptions options;
  std::optional<int64_t> latent;
  bool plain_pca = false;
};

int run_calibrate(const CalibrateArgs& args) {
  model::LoadedModel loaded = model::load_model(args.checkpoint);
  apps::CalibrationOptions options = args.options;
  options.latent_dim = args.latent.value_or(loaded.config.get_int("CONFIG_KVSPLICE_LATENT"));
  options.knots = loaded.config.get_int("CONFIG_KVSPLICE_KNOTS");
  options.fit.seed = static_cast<uint64_t>(loaded.config.get_int("CONFIG_SEED"));
  options.plain_pca = args.plain_pca;
  const data::TextCorpus corpus =
      data::load_corpus(loaded.config.get_string("CONFIG_DATA"), loaded.config.get_float("CONFIG_VAL_FRACTION"));
  std::cerr << "rakv calibrate: " << (args.plain_pca ? "plain PCA" : "KVSplice") << " latent " << options.latent_dim
            << " per layer on " << options.tokens << " tokens of the " << args.split << " split\n";
  const apps::KVSpliceSet set =
      apps::calibrate_kvsplice(loaded.model, args.split == "val" ? corpus.val : corpus.train, options, std::cerr);
  apps::save_kvsplice_set(args.out, set);
  std::cerr << "wrote " << args.out << "\n";
  return 0;
}

int run_eval(const apps::EvalOptions& options) {
  apps::run_eval(options, std::cerr);
  return 0;
}

}  // namespace

void add_calibrate_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<CalibrateArgs>();
  CLI::App* cmd = app.add_subcommand("calibrate", "Fit a KVSplice V compressor per layer of a trained model");
  cmd->add_option("--checkpoint", args->checkpoint, "model.safetensors written by rakv train")->required();
  cmd->add_option("--out", args->out, "Output KVSplice file (safetensors)")->required();
  cmd->add_option("--tokens", args->options.tokens, "Tokens of text whose V vectors calibrate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--latent", args->latent, "Latent values per token and head [CONFIG_KVSPLICE_LATENT]")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--epochs", args->options.fit.epochs, "Spline fit epochs")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--lr", args->options.fit.lr, "Spline fit learning rate (AdamW)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--split", args->split, "Text to calibrate on: val (held out) or train")
      ->capture_default_str()
      ->check(CLI::IsMember({"val", "train"}));
  cmd->add_flag("--plain-pca", args->plain_pca, "The plain-PCA baseline (identity spline)");
  cmd->callback([&run, args] { run = [args] { return run_calibrate(*args); }; });
}

void add_eval_command(CLI::App& app, Action& run) {
  auto options = std::make_shared<apps::EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "Streaming validation perplexity under KV budgets and KVSplice");
  cmd->add_option("--checkpoint", options->checkpoint, "model.safetensors written by rakv train")->required();
  cmd->add_option("--out", options->out_dir, "Output directory: eval.csv, eval.png")->required();
  cmd->add_option("--kv-keep-ratios", options->keep_ratios, "KV budgets to evaluate")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--kvsplice", options->kvsplice_file, "KVSplice file from rakv calibrate")->check(CLI::ExistingFile);
  cmd->add_option("--kvsplice-latents", options->latents,
                  "Latent sizes to calibrate (on the training split) and evaluate")
      ->delimiter(',');
  cmd->add_option("--tokens", options->tokens, "Validation tokens (whole blocks)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--calibration-tokens", options->calibration_tokens, "Training tokens per KVSplice calibration")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([&run, options] { run = [options] { return run_eval(*options); }; });
}

}  // namespace rakv::cli
