// `rakv config`: list, check and print configurations; generate the Kconfig file.
#include <iomanip>
#include <iostream>
#include <memory>

#include "commands.h"
#include "rakv/config.h"
#include "rakv/model/gpt2.h"

namespace rakv::cli {
namespace {

struct ConfigArgs {
  bool list = false;
  bool kconfig = false;
  bool defaults = false;
  std::string check;
  std::vector<std::string> sets;
};

std::string type_name(const config::OptionSpec& spec) {
  switch (spec.type) {
    case config::OptionType::kBool: return "bool";
    case config::OptionType::kInt: return "int";
    case config::OptionType::kFloat: return "float";
    case config::OptionType::kString: return "string";
    case config::OptionType::kChoice: {
      std::string choices;
      for (const auto& c : spec.choices) choices += (choices.empty() ? "" : "|") + c;
      return choices;
    }
  }
  return "?";
}

int run_config(const ConfigArgs& args) {
  if (args.kconfig) {
    std::cout << config::generate_kconfig();
    return 0;
  }
  if (args.list) {
    for (const auto& spec : config::option_registry()) {
      std::cout << std::left << std::setw(30) << spec.name << " " << std::setw(26) << type_name(spec)
                << " default " << (spec.default_value.empty() ? "\"\"" : spec.default_value) << "\n    "
                << spec.help << "\n";
    }
    return 0;
  }
  config::Config cfg = args.check.empty() ? config::Config() : config::Config::parse_file(args.check);
  for (const auto& assignment : args.sets) cfg.apply_assignment(assignment);
  model::gpt2_config_from(cfg);  // validates the combination of model options
  if (!args.check.empty() && !args.defaults) {
    std::cerr << args.check << ": OK\n";
    return 0;
  }
  std::cout << cfg.to_text();
  return 0;
}

}  // namespace

void add_config_command(CLI::App& app, Action& run) {
  auto args = std::make_shared<ConfigArgs>();
  CLI::App* cmd = app.add_subcommand("config", "List options, check a .config, print Kconfig");
  cmd->add_flag("--list", args->list, "Describe every CONFIG_ option");
  cmd->add_flag("--kconfig", args->kconfig, "Print the Kconfig file generated from the option table");
  cmd->add_flag("--print", args->defaults, "Print the full resolved configuration");
  cmd->add_option("--check", args->check, "Validate a .config file")->check(CLI::ExistingFile);
  cmd->add_option("--set", args->sets, "Override an option: --set CONFIG_X=value");
  cmd->callback([&run, args] { run = [args] { return run_config(*args); }; });
}

}  // namespace rakv::cli
