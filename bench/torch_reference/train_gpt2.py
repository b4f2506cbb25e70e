#!/usr/bin/env python3
"""PyTorch reference of rakv's GPT-2 training step: the baseline `rakv bench-train` is compared with.

The same models (plain, RA, RA + R-MLP, PrunedKV) with the same shapes, parameter names,
initialisation scheme, optimizer groups and step as rakv (bf16 autocast on CUDA, fused AdamW,
gradient clipping, SDPA), run eagerly or under torch.compile, on the same synthetic token stream.

    python3 train_gpt2.py --config configs/defconfigs/gpt2-124m-ra-rmlp --steps 20 [--compile]
    python3 train_gpt2.py --import DIR      # same init and batches as `rakv bench-train --export DIR`

RA uses the audit's `scale_tensor` gate scaling by default (what a user of the Python reference
runs after the audit); --gate-scaling selects split_cat or fused. PrunedKV follows the Python
reference: importance from the materialised B*H*T^2 softmax and one global top-k per row (it runs
out of memory at long T; rakv's causal, streaming version does not).
"""
import argparse
import json
import math
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

if not hasattr(F, "scaled_dot_product_attention"):  # PyTorch < 2.0 (e.g. Debian's 1.13, for CPU checks)
    def _causal_attention(q, k, v, is_causal=True):
        t = q.shape[-2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
        return torch.softmax(scores.masked_fill(mask, float("-inf")), -1) @ v

    F.scaled_dot_product_attention = _causal_attention

# ----------------------------------------------------------------------------------------------
# configuration (the subset of rakv's CONFIG_ options these models use)
DEFAULTS = {
    "N_LAYER": "4", "N_HEAD": "4", "N_EMBD": "128", "BLOCK_SIZE": "128", "VOCAB_SIZE": "256",
    "MLP_EXPANSION": "4", "RA": "y", "RA_LAYERS": "all", "RA_R": "4", "RA_PER_HEAD_GATES": "n",
    "RA_SELF_RESTART": "n", "RMLP": "y", "RMLP_LAYERS": "all", "RMLP_R_FF": "64",
    "KV_PRUNE": "n", "KV_PRUNE_LAYERS": "all", "KV_KEEP_RATIO": "0.381966", "KV_K_MIN": "64",
    "KV_RECENCY": "64", "BATCH_SIZE": "16", "GRAD_ACCUM_STEPS": "1", "LEARNING_RATE": "3e-3",
    "WEIGHT_DECAY": "0.1", "BETA1": "0.9", "BETA2": "0.95", "GRAD_CLIP": "1.0", "SEED": "1337",
    "DEVICE": "cpu",
}


def config_items(line):
    line = line.strip()
    if line.startswith("# CONFIG_") and line.endswith(" is not set"):
        yield line[len("# CONFIG_"):-len(" is not set")], "n"
    elif line.startswith("CONFIG_") and "=" in line:
        key, value = line[len("CONFIG_"):].split("=", 1)
        yield key, value.strip().strip('"')


def parse_config(lines):
    cfg = dict(DEFAULTS)
    for line in lines:
        cfg.update(config_items(line))
    return cfg


def layer_mask(text, n_layer):
    if text == "all":
        return [True] * n_layer
    if text in ("none", ""):
        return [False] * n_layer
    chosen = {int(x) for x in text.split(",")}
    return [i in chosen for i in range(n_layer)]


# ----------------------------------------------------------------------------------------------
# models
class Attention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.c_attn = nn.Linear(c, 3 * c, bias=False)
        self.c_proj = nn.Linear(c, c, bias=False)

    def heads(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        return [z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v)]

    def forward(self, x):
        q, k, v = self.heads(x)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(x.shape))


class ReciprocalAttention(Attention):
    def __init__(self, c, h, r, per_head, self_restart, gate_scaling):
        super().__init__(c, h)
        self.r, self.d = r, c // h
        gates = h if per_head else 1
        self.w_std = nn.Parameter(torch.full((gates,), 0.9))
        self.w_rec = nn.Parameter(torch.full((gates,), 0.1))
        self.self_restart_alpha = nn.Parameter(torch.full((h,), 0.05)) if self_restart else None
        self.gate_scaling = gate_scaling

    def scale(self, power):
        d_std = self.d - self.r
        s_std = torch.clamp_min(self.w_std, 1e-8) ** power
        s_rec = torch.clamp_min(self.w_rec, 1e-8) ** power
        return torch.cat([s_std.view(-1, 1).expand(self.h, d_std), s_rec.view(-1, 1).expand(self.h, self.r)], 1)

    def forward(self, x):
        b, t, c = x.shape
        if self.gate_scaling == "fused":
            rows = torch.cat([self.scale(1.0).reshape(c, 1), torch.ones(2 * c, 1, device=x.device)])
            q, k, v = [z.view(b, t, self.h, self.d).transpose(1, 2)
                       for z in F.linear(x, self.c_attn.weight * rows).split(c, dim=2)]
        else:
            q, k, v = self.heads(x)
            if self.gate_scaling == "split_cat":
                d_std = self.d - self.r
                g_std = torch.sqrt(torch.clamp_min(self.w_std, 1e-8)).view(1, -1, 1, 1)
                g_rec = torch.sqrt(torch.clamp_min(self.w_rec, 1e-8)).view(1, -1, 1, 1)
                q, k = (torch.cat([q[..., :d_std] * g_std, q[..., d_std:] * g_rec], -1),
                        torch.cat([k[..., :d_std] * g_std, k[..., d_std:] * g_rec], -1))
            else:  # scale_tensor
                s = self.scale(0.5).view(1, self.h, 1, self.d).to(q.dtype)
                q, k = q * s, k * s
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.self_restart_alpha is not None:
            a = self.self_restart_alpha.clamp(0, 0.5).view(1, self.h, 1, 1)
            y = (1 - a) * y + a * v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class ReferencePrunedKV(Attention):
    """The Python reference's PrunedKV (v_only): importance from the materialised softmax."""

    def __init__(self, c, h, keep_ratio, k_min, recency):
        super().__init__(c, h)
        self.keep_ratio, self.k_min, self.recency = keep_ratio, k_min, recency

    def forward(self, x):
        q, k, v = self.heads(x)
        t = x.shape[1]
        with torch.no_grad():
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            probs = torch.softmax(scores.float().masked_fill(mask, float("-inf")), -1)
            importance = probs.sum(-2) / (t - torch.arange(t, device=x.device))
            k_keep = min(t, max(self.k_min, int(t * self.keep_ratio)))
            if t > self.recency:
                importance[..., t - self.recency:] = float("inf")
            keep = torch.zeros_like(importance, dtype=torch.bool).scatter_(-1, importance.topk(k_keep, -1).indices, True)
        y = F.scaled_dot_product_attention(q, k, v * keep.unsqueeze(-1), is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(x.shape))


class MLP(nn.Module):
    def __init__(self, c, e):
        super().__init__()
        self.c_fc = nn.Linear(c, e * c, bias=False)
        self.c_proj = nn.Linear(e * c, c, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class ReciprocalMLP(MLP):
    """rakv's fused R-MLP: one up GEMM, gates folded into the down projection's columns."""

    def __init__(self, c, e, r_ff):
        super().__init__(c, e)
        self.r_ff, self.hidden = r_ff, e * c
        self.w_std = nn.Parameter(torch.full((1,), 0.9))
        self.w_rec = nn.Parameter(torch.full((1,), 0.1))
        self.register_buffer("coupling_scale", torch.ones(1))

    def forward(self, x):
        d_std = self.hidden - self.r_ff
        down = torch.cat([self.c_proj.weight[:, :d_std] * self.w_std,
                          self.c_proj.weight[:, d_std:] * (self.w_rec * self.coupling_scale)], 1)
        return F.linear(F.gelu(self.c_fc(x)), down)


class Block(nn.Module):
    def __init__(self, cfg, layer, gate_scaling):
        super().__init__()
        c, h, n = int(cfg["N_EMBD"]), int(cfg["N_HEAD"]), int(cfg["N_LAYER"])
        self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
        ra = cfg["RA"] == "y" and layer_mask(cfg["RA_LAYERS"], n)[layer]
        pruned = cfg["KV_PRUNE"] == "y" and layer_mask(cfg["KV_PRUNE_LAYERS"], n)[layer]
        if ra:
            self.attn = ReciprocalAttention(c, h, int(cfg["RA_R"]), cfg["RA_PER_HEAD_GATES"] == "y",
                                            cfg["RA_SELF_RESTART"] == "y", gate_scaling)
        elif pruned:
            self.attn = ReferencePrunedKV(c, h, float(cfg["KV_KEEP_RATIO"]), int(cfg["KV_K_MIN"]),
                                          int(cfg["KV_RECENCY"]))
        else:
            self.attn = Attention(c, h)
        rmlp = cfg["RMLP"] == "y" and layer_mask(cfg["RMLP_LAYERS"], n)[layer]
        e = int(cfg["MLP_EXPANSION"])
        self.mlp = ReciprocalMLP(c, e, int(cfg["RMLP_R_FF"])) if rmlp else MLP(c, e)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, cfg, gate_scaling):
        super().__init__()
        c, n = int(cfg["N_EMBD"]), int(cfg["N_LAYER"])
        self.wte = nn.Embedding(int(cfg["VOCAB_SIZE"]), c)
        self.wpe = nn.Embedding(int(cfg["BLOCK_SIZE"]), c)
        self.blocks = nn.ModuleList([Block(cfg, i, gate_scaling) for i in range(n)])
        self.ln_f = nn.LayerNorm(c)
        for name, p in self.named_parameters():  # rakv's initialisation scheme
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n) if name.endswith("c_proj.weight") else 0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


# ----------------------------------------------------------------------------------------------
def read_safetensors(path):
    """The safetensors format (8-byte length, JSON header, data) without the safetensors package."""
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "BF16": torch.bfloat16, "F16": torch.float16}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = bytearray(data[8 + n + begin:8 + n + end])
        tensors[name] = torch.frombuffer(raw, dtype=dtypes[entry["dtype"]]).reshape(entry["shape"]).clone() \
            if end > begin else torch.empty(entry["shape"], dtype=dtypes[entry["dtype"]])
    return tensors, header.get("__metadata__", {})


def progression_batch(batch, block, generator, device):
    start = torch.randint(0, 256, (batch, 1), generator=generator)
    step = torch.randint(1, 16, (batch, 1), generator=generator)
    return ((start + step * torch.arange(block + 1)) % 256).to(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], help="CONFIG_X=V override")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--gate-scaling", default="scale_tensor", choices=["split_cat", "scale_tensor", "fused"])
    parser.add_argument("--import", dest="import_dir", help="same init and batches as rakv bench-train --export DIR")
    parser.add_argument("--json", help="write the result as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed steps, profile 3 more and print the GPU kernels by total time")
    args = parser.parse_args()

    lines = open(args.config).read().splitlines() if args.config else []
    if args.import_dir:  # the configuration rakv exported with the weights
        init, metadata = read_safetensors(f"{args.import_dir}/init.safetensors")
        lines = metadata["config"].splitlines()
    cfg = parse_config(lines + args.set)
    device = torch.device("cuda" if cfg["DEVICE"] == "cuda" else "cpu")
    torch.manual_seed(int(cfg["SEED"]))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = GPT2(cfg, args.gate_scaling)
    if args.import_dir:
        missing = model.load_state_dict({k: v for k, v in init.items()}, strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            sys.exit(f"init.safetensors does not fit the model: {missing}")
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    lr = float(cfg["LEARNING_RATE"])
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(cfg["WEIGHT_DECAY"])}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(float(cfg["BETA1"]), float(cfg["BETA2"])), eps=1e-8,
        **({"fused": True} if device.type == "cuda" else {}))
    step_model = torch.compile(model) if args.compile else model
    batch, block, accum = int(cfg["BATCH_SIZE"]), int(cfg["BLOCK_SIZE"]), int(cfg["GRAD_ACCUM_STEPS"])
    clip = float(cfg["GRAD_CLIP"])
    generator = torch.Generator().manual_seed(int(cfg["SEED"]))
    batches = read_safetensors(f"{args.import_dir}/batches.safetensors")[0]["tokens"] if args.import_dir else None
    total = args.warmup + args.steps if batches is None else batches.shape[0]

    def step(i):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            tokens = (batches[i, micro].to(device) if batches is not None
                      else progression_batch(batch, block, generator, device))
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = step_model(tokens[:, :block], tokens[:, 1:]) / accum
            loss.backward()
            loss_sum += loss.detach()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss_sum

    losses = []
    for i in range(total):
        if i == args.warmup and batches is None:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        loss = step(i)
        if batches is not None:
            losses.append(loss.item())
    if batches is not None:
        print("step,loss")
        for i, value in enumerate(losses):
            print(f"{i + 1},{value:.8f}")
        return
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for i in range(3):
                step(i)
            if device.type == "cuda":
                torch.cuda.synchronize()
        sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
    tokens_per_s = args.steps * batch * block * accum / seconds
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    name = f"pytorch {'compile' if args.compile else 'eager'}"
    print(f"{name}: {tokens_per_s / 1e3:.1f}k tokens/s, {1000 * seconds / args.steps:.2f} ms/step, "
          f"loss {loss.item():.4f}, peak memory {peak:.2f} GiB")
    if args.json:
        json.dump({"implementation": name, "tokens_per_s": tokens_per_s, "ms_per_step": 1000 * seconds / args.steps,
                   "final_loss": loss.item(), "peak_memory_gib": peak}, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
