"""PyTorch baselines for the CUDA kernel benchmarks (tests/cuda/run.sh runs it with BASELINES=1).

torch.topk on [8, 12, T] fp32 (k = 0.38 T; default sorted=True, sorted=False, and sorted=False
followed by sorting the indices, which is what kv_select returns) and causal SDPA forward at
B=1, H=12 (fp16), timed with CUDA events (median): one eager call per timed region, with and
without an L2 flush before it, and a CUDA graph of 20 calls (per call, no host launch gaps).
Also GPT-2's LM-head cross-entropy (bf16 logits, eager and torch.compile), forward and backward.
BASELINES_ONLY=topk or =cross_entropy runs only those.
"""
import os
import statistics

import torch
import torch.nn.functional as F


def median_us(fn, warmup=5, reps=30, flush=False):
    buf = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        if flush:
            buf.fill_(i & 0xFF)
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3)
    return statistics.median(times)


def graph_us(fn, calls=20, reps=20):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return median_us(graph.replay, warmup=3, reps=reps) / calls


def main():
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}")
    if os.environ.get("BASELINES_ONLY") == "cross_entropy":
        print("\n| baseline | shape | one call (us) | flushed L2 (us) | graph, per call (us) |\n|---|---|---|---|---|")
        cross_entropy_baselines()
        return
    print("\n| baseline | shape | one call (us) | flushed L2 (us) | graph, per call (us) |\n|---|---|---|---|---|")
    topk_only = os.environ.get("BASELINES_ONLY") == "topk"
    for t in (16384, 131072) if topk_only else (4096, 16384, 32768, 131072):
        k = int(0.38 * t)
        x = torch.randn(8, 12, t, device="cuda").mul_(2).exp_().mul_(1e-4)
        for name, fn in (
            ("torch.topk (sorted=True)", lambda: torch.topk(x, k, dim=-1)),
            ("torch.topk sorted=False", lambda: torch.topk(x, k, dim=-1, sorted=False)),
            ("torch.topk + sort indices", lambda: torch.topk(x, k, dim=-1, sorted=False)[1].sort(dim=-1)),
        ):
            print(f"| {name} k={k} | [8,12,{t}] | {median_us(fn):.1f} | {median_us(fn, flush=True):.1f} | "
                  f"{graph_us(fn):.1f} |")
    if topk_only:
        return
    for t, d, reps in ((4096, 64, 50), (16384, 64, 20), (16384, 128, 10), (131072, 64, 3)):
        q, k, v = (torch.randn(1, 12, t, d, device="cuda", dtype=torch.float16) for _ in range(3))
        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        print(f"| SDPA causal fwd fp16 | B1 H12 T{t} D{d} | {median_us(fn, warmup=2, reps=reps):.1f} | - | - |")
    cross_entropy_baselines()


def cross_entropy_baselines():
    """GPT-2's LM-head loss as training scripts run it under autocast: bf16 logits [16384, 50257]
    (cut from a 50304-wide head), cross_entropy in float32, forward and forward + backward; and
    torch.compile of the same function (which fuses the cast and the softmax)."""
    n, vocab, columns = 16384, 50257, 50304
    padded = torch.randn(n, columns, device="cuda").mul_(2).to(torch.bfloat16).requires_grad_(True)
    targets = torch.randint(0, vocab, (n,), device="cuda")

    def loss_fn(logits):
        return F.cross_entropy(logits[:, :vocab].float(), targets)

    compiled = torch.compile(loss_fn)
    for name, fn in (("F.cross_entropy(logits.float())", loss_fn), ("torch.compile of it", compiled)):
        fwd = lambda: fn(padded)

        def fwd_bwd():
            padded.grad = None  # no accumulation pass into an earlier gradient
            fn(padded).backward()

        print(f"| {name} bf16 fwd | [{n}, {vocab}] | {median_us(fwd, reps=20):.1f} | "
              f"{median_us(fwd, reps=20, flush=True):.1f} | - |")
        print(f"| {name} bf16 fwd+bwd | [{n}, {vocab}] | {median_us(fwd_bwd, reps=20):.1f} | "
              f"{median_us(fwd_bwd, reps=20, flush=True):.1f} | - |")


if __name__ == "__main__":
    main()
