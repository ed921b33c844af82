"""PyTorch peer of `benchmarks -- train`: the same Llama step on the CPU, timed the same way.

Usage: python3 train_llama_torch.py --dim 288 --layers 6 --heads 6 --kv-heads 6 --hidden 768 --vocab 32000
                                    --batch 8 --seq 256 --steps 3 --threads 2 --mode none|lora|qlora [--rank 8]
Modes: none = forward + backward with every weight trainable; lora = LoRA r on all seven projections, frozen
base, forward + backward + AdamW over the adapters; qlora = the same over an NF4 + double-quant base that is
dequantized on every forward (what PEFT + bitsandbytes do on the CPU).
Prints one JSON line: {"tokens_per_s": ..., "step_s": ..., "peak_rss_mb": ..., "openblas_core": ..., "blas_library": ...,
"env_coretype": ...}: openblas_core is the core the OpenBLAS mapped in this process runs on (Debian's torch does its
GEMMs through libblas.so.3 -> OpenBLAS), null when none is; env_coretype is OPENBLAS_CORETYPE as this process saw it
(the benchmark clears it for the peer, so its OpenBLAS detects the CPU itself).
"""
import argparse, ctypes, json, math, os, resource, time

import torch
import torch.nn.functional as F


NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                    0.7229568362236023, 1.0])


class Dequantize(torch.autograd.Function):
    """x @ dequant(W)^T with no weight gradient: backward needs only grad @ dequant(W)."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return x @ layer.weight().t()

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.layer.weight(), None


class NF4Linear(torch.nn.Module):
    """Frozen NF4 weight (block 64) with double-quantized absmax (int8 per 256 blocks + fp32 scale + mean offset)."""

    def __init__(self, linear):
        super().__init__()
        w = linear.weight.detach()
        self.shape = w.shape
        blocks = w.reshape(-1, 64)
        absmax = blocks.abs().amax(dim=1)
        codes = (blocks / absmax[:, None]).unsqueeze(-1).sub(NF4).abs().argmin(-1).to(torch.uint8)
        self.packed = (codes[:, 0::2] << 4) | codes[:, 1::2]
        self.offset = absmax.mean()
        centered = (absmax - self.offset).reshape(-1, 256) if absmax.numel() % 256 == 0 else (absmax - self.offset)[None, :]
        self.scale = centered.abs().amax(dim=1, keepdim=True) / 127
        self.absmax_q = torch.round(centered / self.scale).to(torch.int8)

    def weight(self):
        absmax = (self.absmax_q.float() * self.scale).reshape(-1) + self.offset
        codes = torch.stack(((self.packed >> 4), (self.packed & 15)), dim=-1).reshape(self.packed.shape[0], -1).long()
        return (NF4[codes] * absmax[:, None]).reshape(self.shape)

    def forward(self, x):
        return Dequantize.apply(x, self)


class LoRA(torch.nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.scaling = base, alpha / rank
        in_f, out_f = base.shape[1] if isinstance(base, NF4Linear) else base.in_features, base.shape[0] if isinstance(base, NF4Linear) else base.out_features
        self.lora_A = torch.nn.Parameter(torch.empty(rank, in_f).uniform_(-1 / math.sqrt(in_f), 1 / math.sqrt(in_f)))
        self.lora_B = torch.nn.Parameter(torch.zeros(out_f, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


def adapt(model, mode, rank):
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name.endswith("_proj") and isinstance(child, torch.nn.Linear):
                base = NF4Linear(child) if mode == "qlora" else child
                setattr(module, name, LoRA(base, rank, 2 * rank))


class Attention(torch.nn.Module):
    def __init__(self, dim, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = torch.nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = torch.nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = torch.nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = torch.nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        y = causal_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


def causal_attention(q, k, v):
    # torch 1.13 (Debian's) has no scaled_dot_product_attention: the classic masked softmax.
    t = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v


def rope(x, cos, sin):
    # interleaved pairs, as llama2.c
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Layer(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(a.dim), RMSNorm(a.dim)
        self.self_attn = Attention(a.dim, a.heads, a.kv_heads)
        self.gate_proj = torch.nn.Linear(a.dim, a.hidden, bias=False)
        self.up_proj = torch.nn.Linear(a.dim, a.hidden, bias=False)
        self.down_proj = torch.nn.Linear(a.hidden, a.dim, bias=False)

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        n = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class Llama(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = torch.nn.Embedding(a.vocab, a.dim)
        torch.nn.init.normal_(self.embed.weight, std=0.02)  # as PeftGen's init, so logits start small
        self.layers = torch.nn.ModuleList(Layer(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.dim)
        hd = a.dim // a.heads
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(a.seq).float(), freqs)
        self.register_buffer("cos", angles.cos()[None, :, None, :])
        self.register_buffer("sin", angles.sin()[None, :, None, :])

    def forward(self, ids, targets):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        logits = self.norm(x) @ self.embed.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def openblas_core():
    """(core name, library path) of the OpenBLAS mapped in this process, from /proc/self/maps; (None, None) if none."""
    try:
        with open("/proc/self/maps") as maps:
            paths = [line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6]
    except OSError:
        return None, None
    # Each library once, in load order; the OpenBLAS library itself (its file name says so) before libblas.so.3 wrappers
    # in an openblas directory. CDLL of a mapped library returns the same instance: no second load, no second constructor.
    candidates = [path for path in dict.fromkeys(paths) if "openblas" in path.lower() and ".so" in path]
    candidates.sort(key=lambda path: "openblas" not in os.path.basename(path).lower())
    for path in candidates:
        try:
            get_corename = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        get_corename.restype, get_corename.argtypes = ctypes.c_char_p, []
        core = get_corename()
        return (core.decode().strip() if core else None), path
    return None, None


def main():
    p = argparse.ArgumentParser()
    for name, default in [("dim", 288), ("layers", 6), ("heads", 6), ("kv-heads", 6), ("hidden", 768), ("vocab", 32000),
                          ("batch", 8), ("seq", 256), ("steps", 3), ("threads", 2)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--mode", default="none", choices=["none", "lora", "qlora"])
    p.add_argument("--rank", type=int, default=8)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = Llama(a)
    optimizer = None
    if a.mode != "none":
        adapt(model, a.mode, a.rank)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    targets = torch.randint(0, a.vocab, (a.batch, a.seq))
    times = []
    for step in range(a.steps + 1):  # the first step warms up
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        times.append(time.perf_counter() - start)
    best = min(times[1:])
    core, library = openblas_core()
    print(json.dumps({"tokens_per_s": a.batch * a.seq / best, "step_s": best,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "loss": float(loss), "torch": torch.__version__,
                      "openblas_core": core, "blas_library": library,
                      "env_coretype": os.environ.get("OPENBLAS_CORETYPE")}))


if __name__ == "__main__":
    main()
