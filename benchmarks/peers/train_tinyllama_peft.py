"""Peer of `benchmarks -- cuda-train`: Hugging Face transformers + PEFT LoRA in bf16 on the same GPU.

Usage: python3 train_tinyllama_peft.py --dim 2048 --layers 22 --heads 32 --kv-heads 4 --hidden 5632 --vocab 32000
                                       --batch 1 --seq 1024 --steps 5 --rank 16 [--device cuda:0]
A LlamaForCausalLM of that shape with random weights, in bf16 (base and adapters), LoRA r on all seven projections
(alpha 2r, no dropout), AdamW over the adapters; step 0 warms up, the median of the rest is reported. Timing waits for
the GPU (torch.cuda.synchronize); memory is torch.cuda.max_memory_allocated over the timed steps.
Prints one JSON line: {"tokens_per_s": ..., "step_s": ..., "peak_gpu_mb": ..., "loss": ...}.
"""
import argparse
import json
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("dim", 2048), ("layers", 22), ("heads", 32), ("kv-heads", 4), ("hidden", 5632),
                          ("vocab", 32000), ("batch", 1), ("seq", 1024), ("steps", 5), ("rank", 16)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--device", default="cuda:0")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=a.dim, intermediate_size=a.hidden, num_hidden_layers=a.layers,
                         num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
                         max_position_embeddings=a.seq, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         torch_dtype=torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.use_cache = False
    lora = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lora)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g).to(device)
    labels = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g).to(device)
    times, loss_value = [], 0.0
    for step in range(a.steps + 1):
        if step == 1:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        logits = model(input_ids=ids).logits
        # The same loss as PeftGen: next-token targets given position by position (no shift), mean over tokens.
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, a.vocab), labels.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        print(f"peer seq {a.seq} step {step}: {times[-1]:.3f} s, loss {loss_value:.4f}", flush=True, file=__import__("sys").stderr)
    step_s = statistics.median(times[1:])
    print(json.dumps({
        "tokens_per_s": a.batch * a.seq / step_s,
        "step_s": step_s,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / (1024 * 1024),
        "loss": loss_value,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device),
    }))


if __name__ == "__main__":
    main()
