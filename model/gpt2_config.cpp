// CONFIG_ options -> a validated GPT2Config. Errors name the options the user must change.
#include <torch/torch.h>

#include <sstream>

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

  const bool prune = cfg.get_bool("CONFIG_KV_PRUNE");
  const std::vector<bool> prune_layers =
      prune ? config::parse_layer_list(cfg.get_string("CONFIG_KV_PRUNE_LAYERS"), c.n_layer,
                                       "CONFIG_KV_PRUNE_LAYERS")
            : std::vector<bool>(c.n_layer, false);
  auto& kv = c.pruned_kv;
  kv.mode = nn::parse_prune_mode(cfg.get_string("CONFIG_KV_PRUNE_MODE"));
  kv.keep_ratio = cfg.get_float("CONFIG_KV_KEEP_RATIO");
  kv.k_min = cfg.get_int("CONFIG_KV_K_MIN");
  kv.fixed_k_keep = cfg.get_int("CONFIG_KV_K_KEEP");
  // The reference's legacy mode kept a fixed 391 keys.
  if (kv.mode == nn::PruneMode::kLegacy && kv.fixed_k_keep == 0) kv.fixed_k_keep = 391;
  kv.recency = cfg.get_int("CONFIG_KV_RECENCY");
  kv.exposure_correction = cfg.get_bool("CONFIG_KV_EXPOSURE_CORRECT");
  kv.interval = cfg.get_int("CONFIG_KV_PRUNE_INTERVAL");
  kv.ema_momentum = cfg.get_float("CONFIG_KV_EMA_MOMENTUM");
  kv.use_sampling = cfg.get_bool("CONFIG_RA_USE_SAMPLING");
  kv.sampling_threshold = cfg.get_int("CONFIG_RA_SAMPLING_THRESHOLD");
  kv.sample_fraction = cfg.get_float("CONFIG_KV_SAMPLE_FRACTION");
  kv.seed = static_cast<uint64_t>(cfg.get_int("CONFIG_SEED"));

  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    if (ra_layers[layer] && prune_layers[layer]) {
      throw ConfigError("layer " + std::to_string(layer) +
                        " is listed in both CONFIG_RA_LAYERS and CONFIG_KV_PRUNE_LAYERS (a layer has one "
                        "attention kind: set CONFIG_RA=n or narrow one of the lists)");
    }
    c.attention.push_back(ra_layers[layer]      ? AttentionKind::kReciprocal
                          : prune_layers[layer] ? AttentionKind::kPrunedKV
                                                : AttentionKind::kPlain);
    c.mlp.push_back(rmlp_layers[layer] ? MLPKind::kReciprocal : MLPKind::kPlain);
  }
  c.activation_checkpointing = cfg.get_bool("CONFIG_ACTIVATION_CHECKPOINTING");
  if (c.activation_checkpointing && c.dropout > 0) {
    std::ostringstream dropout;
    dropout << c.dropout;
    throw ConfigError("CONFIG_ACTIVATION_CHECKPOINTING needs CONFIG_DROPOUT=0 (got " + dropout.str() +
                      "): the recomputed blocks would draw new dropout masks");
  }
  if (c.activation_checkpointing && prune) {
    throw ConfigError("CONFIG_ACTIVATION_CHECKPOINTING cannot be combined with CONFIG_KV_PRUNE=y: "
                      "recomputing a PrunedKV layer would advance its importance EMA and "
                      "sampling seed a second time");
  }
  return c;
}

}  // namespace rakv::model
