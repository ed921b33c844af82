"""Real-client check: an adapter saved by PeftGen loads in Python PEFT on the same base weights and gives the same logits.

Usage: dotnet run -c Release --project benchmarks -- cuda-peft-export --out DIR [--device cuda:0]
       python3 peft_roundtrip_check.py DIR [--tolerance 1e-3] [--device cuda:0|cpu]
DIR holds base/ (Hugging Face Llama folder written by PeftGen), adapter/ (adapter_config.json +
adapter_model.safetensors) and expected.safetensors ("input_ids" as float32 [1, t], "logits" [1, t, vocab] computed by
PeftGen with the adapter). The base is loaded in float32 with transformers, the adapter with PeftModel.from_pretrained,
and the logits compared: max |peft - peftgen| <= tolerance * (1 + max |peftgen|). Also checks that the adapter changes
the logits (so an adapter that failed to load cannot pass). Prints one JSON line; exits 1 on failure.
"""
import argparse
import json
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    expected = load_file(os.path.join(a.folder, "expected.safetensors"))
    ids = expected["input_ids"].round().long().to(a.device)
    want = expected["logits"].float().to(a.device)
    # Full float32 on both sides: no TF32 in the comparison.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    base = LlamaForCausalLM.from_pretrained(os.path.join(a.folder, "base"), torch_dtype=torch.float32).to(a.device).eval()
    with torch.no_grad():
        plain = base(input_ids=ids).logits.float()
    model = PeftModel.from_pretrained(base, os.path.join(a.folder, "adapter")).to(a.device).eval()
    with torch.no_grad():
        got = model(input_ids=ids).logits.float()
    scale = 1.0 + want.abs().max().item()
    error = (got - want).abs().max().item()
    adapter_effect = (plain - want).abs().max().item()
    ok = error <= a.tolerance * scale and adapter_effect > 10 * error
    print(json.dumps({
        "name": "peft_roundtrip_check",
        "max_abs_error": error,
        "tolerance": a.tolerance * scale,
        "adapter_effect": adapter_effect,
        "ok": ok,
        "device": str(a.device),
    }))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
