// CONFIG_ options -> a validated GPT2Config. Errors name the options the user must change.
#include <torch/torch.h>

#include "rakv/model/gpt2.h"

namespace rakv::model {

using config::ConfigError;

GPT2Config gpt2_config_from(const config::Config& cfg) {
  GPT2Config c;
  c.vocab_size = cfg.get_int("CONFIG_VOCAB_SIZE");
  c.block_size = cfg.get_int("CONFIG_BLOCK_SIZE");
  c.n_layer = cfg.get_int("CONFIG_N_LAYER");
  c.n_head = cfg.get_int("CONFIG_N_HEAD");
  c.n_embd = cfg.get_int("CONFIG_N_EMBD");
  c.mlp_expansion = cfg.get_int("CONFIG_MLP_EXPANSION");
  c.dropout = cfg.get_float("CONFIG_DROPOUT");
  if (c.n_embd % c.n_head != 0) {
    throw ConfigError("CONFIG_N_EMBD (" + std::to_string(c.n_embd) +
                      ") must be divisible by CONFIG_N_HEAD (" + std::to_string(c.n_head) + ")");
  }
  const int64_t head_dim = c.n_embd / c.n_head;

  const bool ra = cfg.get_bool("CONFIG_RA");
  const std::vector<bool> ra_layers =
      ra ? config::parse_layer_list(cfg.get_string("CONFIG_RA_LAYERS"), c.n_layer, "CONFIG_RA_LAYERS")
         : std::vector<bool>(c.n_layer, false);
  c.ra.reciprocal_rank = cfg.get_int("CONFIG_RA_R");
  c.ra.per_head_gates = cfg.get_bool("CONFIG_RA_PER_HEAD_GATES");
  c.ra.self_restart = cfg.get_bool("CONFIG_RA_SELF_RESTART");
  c.ra.gate_scaling = nn::parse_gate_scaling(cfg.get_string("CONFIG_RA_GATE_SCALING"));
  if (ra && c.ra.reciprocal_rank >= head_dim) {
    throw ConfigError("CONFIG_RA_R (" + std::to_string(c.ra.reciprocal_rank) +
                      ") must be less than the head dimension " + std::to_string(head_dim) +
                      " (CONFIG_N_EMBD / CONFIG_N_HEAD)");
  }

  const bool rmlp = cfg.get_bool("CONFIG_RMLP");
  const std::vector<bool> rmlp_layers =
      rmlp ? config::parse_layer_list(cfg.get_string("CONFIG_RMLP_LAYERS"), c.n_layer,
                                      "CONFIG_RMLP_LAYERS")
           : std::vector<bool>(c.n_layer, false);
  c.rmlp.reciprocal_units = cfg.get_int("CONFIG_RMLP_R_FF");
  c.rmlp.tied = cfg.get_bool("CONFIG_RMLP_TIED");
  c.rmlp.mixer = cfg.get_bool("CONFIG_RMLP_MIXER");
  c.rmlp.gate_alpha = cfg.get_bool("CONFIG_RMLP_GATE_ALPHA");
  c.rmlp.impl = nn::parse_rmlp_impl(cfg.get_string("CONFIG_RMLP_IMPL"));
  const int64_t hidden = c.mlp_expansion * c.n_embd;
  if (rmlp && c.rmlp.reciprocal_units >= hidden) {
    throw ConfigError("CONFIG_RMLP_R_FF (" + std::to_string(c.rmlp.reciprocal_units) +
                      ") must be less than the MLP width " + std::to_string(hidden) +
                      " (CONFIG_MLP_EXPANSION x CONFIG_N_EMBD)");
  }
  if (rmlp && c.rmlp.tied && 2 * c.rmlp.reciprocal_units > hidden) {
    throw ConfigError("CONFIG_RMLP_TIED needs CONFIG_RMLP_R_FF (" +
                      std::to_string(c.rmlp.reciprocal_units) + ") <= half the MLP width " +
                      std::to_string(hidden / 2));
  }

  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    c.attention.push_back(ra_layers[layer] ? AttentionKind::kReciprocal : AttentionKind::kPlain);
    c.mlp.push_back(rmlp_layers[layer] ? MLPKind::kReciprocal : MLPKind::kPlain);
  }
  return c;
}

}  // namespace rakv::model
