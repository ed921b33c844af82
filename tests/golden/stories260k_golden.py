#!/usr/bin/env python3
"""Golden values for the stories260K Llama checkpoint (llama2.c legacy format).

This is an independent reference for the C# runtime: it reads the checkpoint and
the tokenizer with its own parsing code and runs a plain float32 PyTorch forward
pass, so a bug shared with the C# code would have to be made twice to go unnoticed.

Usage (Debian's PyTorch lives under /usr/bin/python3):

    /usr/bin/python3 tests/golden/stories260k_golden.py \
        --shared ../shared --out tests/PeftGen.Runtime.Tests/Golden/stories260K.json

Output JSON keys:
    config          header facts of the checkpoint
    greedy_from_bos first GREEDY_STEPS argmax token ids generated after BOS
    greedy_text     those ids decoded like llama2.c prints them
    greedy_min_top2_margin  smallest best-minus-second logit gap along the greedy path
    encode_cases    [{text, ids}] from this script's llama2.c-style encoder, no BOS
    prompt          {text, ids (BOS + encode(text)), logits [position][vocab]}
    prompt_loss     mean cross-entropy of predicting ids[1:] from ids[:-1]
"""

import argparse
import json
import math
import os
import re
import struct
import sys

import torch

GREEDY_STEPS = 80
BOS_ID = 1
EOS_ID = 2
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
# llama2.c starts its best-merge search at this score and only accepts strictly
# better candidates, so pieces scored at or below it can never be merged.
MERGE_SCORE_FLOOR = -1e10
SIGNIFICANT_DIGITS = 7

ENCODE_CASES = [
    "Once upon a time",
    "",
    "Hello world!\nNew line",
    "café naïve",
    "日本語",
    "🙂 ok",
    "a  b   c",
    "In 1999, 42 cats ate 3.5 fish; wow?! (yes) - \"quotes\" & 100% #1",
    " leading space",
    "trailing space ",
    "Lily and Tim played in the park. They were happy.",
]
PROMPT_TEXT = "Once upon a time, there was a dog"


# ----------------------------------------------------------------------------
# checkpoint


def read_checkpoint(path):
    """Returns (config dict, dict of float32 weight tensors) from a llama2.c .bin file."""
    with open(path, "rb") as f:
        data = f.read()
    header_size = 7 * 4
    if len(data) < header_size:
        sys.exit(f"{path}: file is {len(data)} bytes, shorter than the 28-byte header")
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = struct.unpack_from("<7i", data, 0)
    # A negative vocab size is llama2.c's flag for a separate classifier matrix.
    shared_classifier = vocab_size > 0
    vocab_size = abs(vocab_size)
    head_size = dim // n_heads
    kv_dim = head_size * n_kv_heads
    config = {
        "dim": dim,
        "hidden_dim": hidden_dim,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "vocab_size": vocab_size,
        "seq_len": seq_len,
        "head_size": head_size,
        "shared_classifier": shared_classifier,
    }

    shapes = [
        ("token_embedding", [vocab_size, dim]),
        ("rms_att", [n_layers, dim]),
        ("wq", [n_layers, dim, dim]),
        ("wk", [n_layers, kv_dim, dim]),
        ("wv", [n_layers, kv_dim, dim]),
        ("wo", [n_layers, dim, dim]),
        ("rms_ffn", [n_layers, dim]),
        ("w1", [n_layers, hidden_dim, dim]),
        ("w2", [n_layers, dim, hidden_dim]),
        ("w3", [n_layers, hidden_dim, dim]),
        ("rms_final", [dim]),
        # Precomputed RoPE tables the file still carries; unused, RoPE is computed below.
        ("freq_cis_real", [seq_len, head_size // 2]),
        ("freq_cis_imag", [seq_len, head_size // 2]),
    ]
    if not shared_classifier:
        shapes.append(("wcls", [vocab_size, dim]))

    expected_floats = sum(math.prod(shape) for _, shape in shapes)
    actual_floats = (len(data) - header_size) // 4
    if actual_floats != expected_floats or (len(data) - header_size) % 4 != 0:
        sys.exit(f"{path}: expected {expected_floats} float32 weights after the header, file holds {(len(data) - header_size) / 4}")

    all_floats = torch.tensor(struct.unpack_from(f"<{expected_floats}f", data, header_size), dtype=torch.float32)
    weights = {}
    offset = 0
    for name, shape in shapes:
        count = math.prod(shape)
        weights[name] = all_floats[offset:offset + count].reshape(shape)
        offset += count
    if shared_classifier:
        weights["wcls"] = weights["token_embedding"]
    return config, weights


# ----------------------------------------------------------------------------
# tokenizer (llama2.c run.c semantics)


def read_tokenizer(path, vocab_size):
    """Returns (pieces as bytes, scores as float) for vocab_size tokens of a llama2.c tokenizer file."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 4  # int32 max_token_length, not needed here
    pieces, scores = [], []
    for token_id in range(vocab_size):
        if offset + 8 > len(data):
            sys.exit(f"{path}: truncated at byte {offset} while reading token {token_id}")
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if length < 0 or offset + length > len(data):
            sys.exit(f"{path}: bad piece length {length} for token {token_id} at byte {offset - 4}")
        pieces.append(data[offset:offset + length])
        scores.append(score)
        offset += length
    return pieces, scores


class Tokenizer:
    def __init__(self, pieces, scores):
        self.pieces = pieces
        self.scores = scores
        # run.c looks pieces up by exact byte string; keep the first id for duplicates.
        self.lookup = {}
        for token_id, piece in enumerate(pieces):
            self.lookup.setdefault(piece, token_id)

    def encode(self, text):
        """llama2.c encode() without BOS/EOS: dummy prefix, per-codepoint pieces with byte fallback, greedy merges."""
        tokens = []
        if text:
            tokens.append(self.lookup[b" "])
        for ch in text:
            utf8 = ch.encode("utf-8")
            if utf8 in self.lookup:
                tokens.append(self.lookup[utf8])
            else:
                # Byte-fallback pieces <0x00>..<0xFF> sit right after <unk>, <s>, </s>.
                tokens.extend(b + 3 for b in utf8)

        # Repeatedly merge the best-scoring adjacent pair (leftmost on ties). Quadratic, fine for test strings.
        while True:
            best_score, best_id, best_index = MERGE_SCORE_FLOOR, -1, -1
            for i in range(len(tokens) - 1):
                merged = self.lookup.get(self.pieces[tokens[i]] + self.pieces[tokens[i + 1]])
                if merged is not None and self.scores[merged] > best_score:
                    best_score, best_id, best_index = self.scores[merged], merged, i
            if best_index < 0:
                return tokens
            tokens[best_index:best_index + 2] = [best_id]

    def piece_bytes(self, prev_token, token):
        """llama2.c decode(prev, token): strip the space after BOS, map <0xHH> to the raw byte."""
        piece = self.pieces[token]
        if prev_token == BOS_ID and piece.startswith(b" "):
            piece = piece[1:]
        raw = re.fullmatch(rb"<0x([0-9A-Fa-f]{2})>", piece)
        return bytes([int(raw.group(1), 16)]) if raw else piece

    def decode(self, ids):
        """Whole-sequence decode: the sequence starts as if after BOS; BOS tokens print nothing."""
        out = bytearray()
        prev = BOS_ID
        for token in ids:
            if token != BOS_ID:
                out += self.piece_bytes(prev, token)
            prev = token
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------
# model


def rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS) * weight


def rope(x, positions, head_size):
    """Rotates interleaved pairs (2i, 2i+1) of the last dim by pos * theta^(-2i/head_size). x: [T, heads, head_size]."""
    pair_index = torch.arange(head_size // 2, dtype=torch.float64)
    freqs = ROPE_THETA ** (-2.0 * pair_index / head_size)
    angles = positions.to(torch.float64)[:, None] * freqs[None, :]          # [T, head_size/2]
    cos = torch.cos(angles).to(torch.float32)[:, None, :]                    # [T, 1, head_size/2]
    sin = torch.sin(angles).to(torch.float32)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.empty_like(x)
    rotated[..., 0::2] = even * cos - odd * sin
    rotated[..., 1::2] = even * sin + odd * cos
    return rotated


def forward(config, w, tokens):
    """Full causal forward over a token list starting at position 0; returns float32 logits [T, vocab]."""
    n_heads, n_kv_heads, head_size = config["n_heads"], config["n_kv_heads"], config["head_size"]
    seq = len(tokens)
    positions = torch.arange(seq)
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()

    x = w["token_embedding"][torch.tensor(tokens)]                           # [T, dim]
    for layer in range(config["n_layers"]):
        h = rms_norm(x, w["rms_att"][layer])
        q = (h @ w["wq"][layer].T).view(seq, n_heads, head_size)
        k = (h @ w["wk"][layer].T).view(seq, n_kv_heads, head_size)
        v = (h @ w["wv"][layer].T).view(seq, n_kv_heads, head_size)
        q = rope(q, positions, head_size)
        k = rope(k, positions, head_size)
        # Grouped-query attention: query head h reads kv head h // (n_heads / n_kv_heads).
        group = n_heads // n_kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(head_size)  # [heads, T, T]
        scores = scores.masked_fill(~causal, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        out = torch.einsum("hts,shd->thd", attn, v).reshape(seq, n_heads * head_size)
        x = x + out @ w["wo"][layer].T

        h = rms_norm(x, w["rms_ffn"][layer])
        gate = torch.nn.functional.silu(h @ w["w1"][layer].T)
        up = h @ w["w3"][layer].T
        x = x + (gate * up) @ w["w2"][layer].T

    x = rms_norm(x, w["rms_final"])
    return x @ w["wcls"].T


def greedy(config, weights, steps):
    """Argmax decoding from BOS at position 0, feeding every generated token back.

    Also returns the smallest gap between the best and second-best logit along the way: an
    implementation whose logits differ by less than that picks the same tokens.
    """
    tokens = [BOS_ID]
    min_margin = math.inf
    for _ in range(steps):
        logits = forward(config, weights, tokens)[-1]
        top2 = torch.topk(logits, 2).values
        min_margin = min(min_margin, (top2[0] - top2[1]).item())
        tokens.append(int(torch.argmax(logits).item()))
    return tokens[1:], min_margin


# ----------------------------------------------------------------------------
# output


def rounded(value):
    """A float with SIGNIFICANT_DIGITS significant digits; json then prints its short form."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def to_json(value, indent=0):
    """JSON with objects and nested lists broken over lines but flat lists kept on one line."""
    pad = "  " * indent
    inner = "  " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        items = [inner + to_json(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", required=True, help="path of the 'shared' folder holding models/stories260K")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    torch.set_num_threads(1)  # single-threaded float32 sums are reproducible run to run
    model_dir = os.path.join(args.shared, "models", "stories260K")
    config, weights = read_checkpoint(os.path.join(model_dir, "stories260K.bin"))
    tokenizer = Tokenizer(*read_tokenizer(os.path.join(model_dir, "tok512.bin"), config["vocab_size"]))

    with torch.no_grad():
        greedy_ids, greedy_margin = greedy(config, weights, GREEDY_STEPS)
        greedy_text = tokenizer.decode(greedy_ids)

        prompt_ids = [BOS_ID] + tokenizer.encode(PROMPT_TEXT)
        prompt_logits = forward(config, weights, prompt_ids)
        # Cross-entropy in float64 from the float32 logits, so the golden loss carries no extra rounding.
        log_probs = torch.log_softmax(prompt_logits[:-1].to(torch.float64), dim=-1)
        targets = torch.tensor(prompt_ids[1:])
        prompt_loss = -log_probs[torch.arange(len(targets)), targets].mean().item()

    expected_start = "Once upon a time, there was a little girl named Lily."
    if not greedy_text.startswith(expected_start):
        sys.exit(f"greedy text does not start with {expected_start!r}; the reference is wrong:\n{greedy_text!r}")

    for text in ENCODE_CASES:
        round_trip = tokenizer.decode([BOS_ID] + tokenizer.encode(text))
        if round_trip != text:
            sys.exit(f"decode(encode({text!r})) gave {round_trip!r}")

    golden = {
        "source": "tests/golden/stories260k_golden.py (PyTorch %s, float32)" % torch.__version__,
        "config": config,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
        "rope_theta": ROPE_THETA,
        "rms_eps": RMS_EPS,
        "greedy_from_bos": greedy_ids,
        "greedy_text": greedy_text,
        "greedy_min_top2_margin": rounded(greedy_margin),
        "encode_cases": [{"text": text, "ids": tokenizer.encode(text)} for text in ENCODE_CASES],
        "prompt": {
            "text": PROMPT_TEXT,
            "ids": prompt_ids,
            "logits": [[rounded(v) for v in row] for row in prompt_logits.tolist()],
        },
        "prompt_loss": rounded(prompt_loss),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(to_json(golden) + "\n")
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes")
    print(greedy_text)


if __name__ == "__main__":
    main()
