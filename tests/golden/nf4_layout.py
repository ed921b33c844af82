#!/usr/bin/env python3
"""Golden layout vectors for PeftGen's 4-bit (NF4 / FP4) block quantization.

An independent reference for src/Runtime/Quantization: bitsandbytes' 4-bit block quantization,
nibble packing and double quantization re-implemented with plain torch ops (bitsandbytes itself
is not used), so the C# code and this script have to agree on every byte.

Usage (Debian's PyTorch lives under /usr/bin/python3):

    /usr/bin/python3 tests/golden/nf4_layout.py \
        --out tests/PeftGen.Runtime.Tests/Golden/nf4_layout.json

What is matched, and where bitsandbytes defines it (its CUDA kernels, csrc/kernels.cu, are the
reference: they produced the checkpoints in circulation; functional.py drives them):

* Blocks run over the flattened row-major weight, so a block may span rows. absmax is the float32
  max |w| of the block. The last block may be partial: its absmax covers only the elements that
  exist (kQuantizeBlockwise loads the missing ones as 0, which cannot raise a max of |w|).
* Normalisation multiplies by the float32 reciprocal, w * (1 / absmax), never w / absmax. An
  all-zero block gets 1 / 0 = inf and 0 * inf = NaN, which every "x > threshold" test rejects, so it
  encodes to code 0 (NF4 -1.0, FP4 +0) and still dequantizes to 0.
* NF4 (dQuantizeNF4): a 4-level tree over 15 thresholds between adjacent codes, taking the upper
  code only when x > threshold: a value exactly on a threshold gets the LOWER code. The thresholds
  are the kernel's float literals: exact midpoints printed to 17 digits, which compile (decimal
  rounded once to float32) to the float32-rounded midpoint except for thresholds 0, 8, 12 and 14,
  one ulp off because those midpoints fall exactly between two float32 values. The tree is a binary
  search, so the code equals the number of thresholds strictly below x; this script counts them.
* FP4 (dQuantizeFP4): sign bit 3 set when x < 0 (so -0.0 and NaN are positive), then a tree on |x|
  over bitsandbytes' seven decimal thresholds 0.00260417, 0.0859375, 0.20833333, 0.29166667,
  0.4166667, 0.583333, 0.8333333 (in float32; the exact midpoints of the E2M1/12 magnitudes except
  for decimal rounding, visibly at 7/12 written as 0.583333), again upper code only when
  |x| > threshold: ties go to the smaller magnitude. Magnitude bins map to the bit patterns
  0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011 (0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1).
* Packing: two codes per byte, the element with the even flat index in the HIGH nibble. An odd
  element count gets (n + 1) / 2 bytes; the spare low nibble holds the code of a 0 scaled by the
  last block (kQuantizeBlockwise quantizes its zero-padded tail like real data): 7 for NF4 (0.0),
  0 for FP4, or 0 if that block is all zeros (the NaN rule above).
* Dequantization: w = code[q] * absmax in float32 (one multiply).
* Double quantization (quantize_4bit with compress_statistics=True): offset = mean(absmax);
  the centred absmax - offset (float32) is quantized by quantize_blockwise with blocksize 256 and
  bitsandbytes' signed dynamic map (create_dynamic_map(signed=True), rebuilt below with the same
  float32 torch ops). Per group of 256 blocks: scale = max |centred| (float32), x = centred * (1 /
  scale), and the 8-bit code comes from dQuantize<0>: a 7-step binary search over the odd indices
  of the sorted map followed by a midpoint test against the even index between them, midpoints
  computed as (a + b) * 0.5f in float32; a tie goes to that even index. dQuantize is reproduced
  step by step below. A group whose centred values are all 0 gets NaN inputs and code 0.
  Dequantized absmax = map[code] * scale + offset (two float32 roundings, no fused multiply-add).
* Not determinable bit for bit: bitsandbytes takes the offset with torch's float32 mean on the
  device, whose summation order is an implementation detail. This script (like PeftGen) sums in
  float64 and rounds the mean once to float32, so the offset may differ from a GPU run by an ulp.

Output JSON: {"source", "dynamic_map": [256 floats], "cases": [{name, rows, cols, quant_type,
block_size, double_quant, weight_f32_base64, packed_hex, absmax | (absmax_codes_hex,
absmax_scales, absmax_offset), dequantized_f32_base64}]}. Numbers are written with 9 significant
digits and the long arrays as base64 little-endian float32, both exact for float32.
"""

import argparse
import base64
import json
import math
import struct
from decimal import Decimal
from fractions import Fraction

import torch

F32 = torch.float32

NF4_CODE = torch.tensor(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=F32,
)

# FP4 (E2M1) magnitudes in bit-pattern order 0b000..0b111, as multiples of 1/12 (bitsandbytes' scaling
# of the format's maximum 12 to 1). Code c is -magnitude[c & 7] when bit 3 is set.
FP4_MAGNITUDE_BY_BITS = torch.tensor([0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0], dtype=F32) / 12.0
FP4_MAGNITUDE_BY_BITS = torch.cat([torch.zeros(1, dtype=F32), FP4_MAGNITUDE_BY_BITS])
FP4_CODE = torch.cat([FP4_MAGNITUDE_BY_BITS, -FP4_MAGNITUDE_BY_BITS])



def float32_literal(text):
    """A C float literal's value: the decimal rounded once, to nearest-even, straight to float32 (as nvcc does).
    Going through a Python float first could round twice."""
    exact = Fraction(Decimal(text))
    guess = torch.tensor(float(exact), dtype=F32)
    candidates = [torch.nextafter(guess, torch.tensor(-2.0)), guess, torch.nextafter(guess, torch.tensor(2.0))]

    def distance_then_odd(c):
        bits = int(c.view(torch.int32).item())
        return abs(Fraction(c.item()) - exact), bits & 1

    return min(candidates, key=distance_then_odd).item()


# bitsandbytes' dQuantizeNF4 and dQuantizeFP4 constants as written in csrc/kernels.cu. The NF4 ones are the double
# midpoints of adjacent codes printed to 17 digits; compiled as float literals, four of them (0, 8, 12, 14) land one
# ulp away from the float32-rounded exact midpoint, because those midpoints sit exactly between two float32 values.
NF4_THRESHOLD_TEXT = [
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011",
]
FP4_THRESHOLD_TEXT = ["0.00260417", "0.0859375", "0.20833333", "0.29166667", "0.4166667", "0.583333", "0.8333333"]
NF4_THRESHOLDS = torch.tensor([float32_literal(t) for t in NF4_THRESHOLD_TEXT], dtype=F32)
FP4_THRESHOLDS = torch.tensor([float32_literal(t) for t in FP4_THRESHOLD_TEXT], dtype=F32)
# Bit patterns of the FP4 magnitude bins in ascending order of magnitude.
FP4_BITS_BY_BIN = torch.tensor([0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011])

DQ_BLOCK = 256


def signed_dynamic_map():
    """bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), float32 torch ops."""
    values = []
    for i in range(7):
        bounds = torch.linspace(0.1, 1, 2 ** i + 1, dtype=F32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        values += ((10 ** (i - 6)) * means).tolist()
        values += (-(10 ** (i - 6)) * means).tolist()
    values += [0.0, 1.0]
    assert len(values) == 256
    return torch.tensor(sorted(values), dtype=F32)


def encode_4bit(scaled, quant_type):
    """Codes (int64) of normalised values, by counting the thresholds strictly below them."""
    if quant_type == "nf4":
        return (scaled.unsqueeze(-1) > NF4_THRESHOLDS).sum(-1)
    magnitude_bin = (scaled.abs().unsqueeze(-1) > FP4_THRESHOLDS).sum(-1)
    return FP4_BITS_BY_BIN[magnitude_bin] | torch.where(scaled < 0, 8, 0)


def dquantize_dynamic(x, code):
    """bitsandbytes' dQuantize<0>: binary search over the odd indices, then a three-way midpoint test."""
    pivot = torch.full(x.shape, 127, dtype=torch.long)
    upper_pivot = torch.full(x.shape, 255, dtype=torch.long)
    lower_pivot = torch.zeros(x.shape, dtype=torch.long)
    lower = torch.full(x.shape, -1.0, dtype=F32)
    upper = torch.full(x.shape, 1.0, dtype=F32)
    val = code[pivot]
    step = 64
    while step > 0:
        right = x > val
        lower_pivot = torch.where(right, pivot, lower_pivot)
        lower = torch.where(right, val, lower)
        upper_pivot = torch.where(right, upper_pivot, pivot)
        upper = torch.where(right, upper, val)
        pivot = torch.where(right, pivot + step, pivot - step)
        val = code[pivot]
        step //= 2
    upper = torch.where(upper_pivot == 255, code[255], upper)
    lower = torch.where(lower_pivot == 0, code[0], lower)
    above = x > val
    mid_up = (upper + val) * 0.5
    mid_down = (lower + val) * 0.5
    return torch.where(
        above,
        torch.where(x > mid_up, upper_pivot, pivot),
        torch.where(x < mid_down, lower_pivot, pivot),
    )


def blocks_of(flat, block):
    """[count] → zero-padded [blocks, block]."""
    n = flat.numel()
    nblocks = (n + block - 1) // block
    padded = torch.zeros(nblocks * block, dtype=F32)
    padded[:n] = flat
    return padded.view(nblocks, block)


def quantize(weight, block, quant_type, double_quant, dynamic_map):
    flat = weight.reshape(-1)
    n = flat.numel()
    blocks = blocks_of(flat, block)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks * (1.0 / absmax).unsqueeze(1)
    codes = encode_4bit(scaled, quant_type).reshape(-1)
    codes = codes[: n + (n % 2)]  # an odd count keeps the encoded zero padding as the spare nibble
    packed = (codes[0::2] << 4) | codes[1::2]
    result = {"packed": packed.to(torch.uint8)}
    table = NF4_CODE if quant_type == "nf4" else FP4_CODE
    if double_quant:
        offset = absmax.double().mean().to(F32)
        centred = absmax - offset
        groups = blocks_of(centred, DQ_BLOCK)
        scales = groups.abs().amax(dim=1)
        normalised = groups * (1.0 / scales).unsqueeze(1)
        absmax_codes = dquantize_dynamic(normalised, dynamic_map).reshape(-1)[: absmax.numel()]
        group_of_block = torch.arange(absmax.numel()) // DQ_BLOCK
        used_absmax = dynamic_map[absmax_codes] * scales[group_of_block] + offset
        result.update(absmax_codes=absmax_codes.to(torch.uint8), absmax_scales=scales, absmax_offset=offset)
    else:
        used_absmax = absmax
        result.update(absmax=absmax)
    block_of_element = torch.arange(n) // block
    result["dequantized"] = table[codes[:n]] * used_absmax[block_of_element]
    return result


def floats(t):
    return [float(f"{v:.9g}") for v in t.reshape(-1).tolist()]


def base64_f32(t):
    """Little-endian float32 bytes, base64: exact and compact for the long arrays."""
    return base64.b64encode(struct.pack(f"<{t.numel()}f", *t.reshape(-1).tolist())).decode("ascii")


def hex_bytes(t):
    return bytes(t.tolist()).hex()


def make_weight(rows, cols, block, generator, quant_type, ties, zero_block):
    # Rows at different scales, like a trained layer, so the absmax (and its double quantization) varies.
    row_scale = torch.exp(torch.randn(rows, 1, generator=generator, dtype=F32))
    w = (torch.randn(rows, cols, generator=generator, dtype=F32) * 0.05 * row_scale).reshape(-1)
    if ties:
        # Block 0 gets absmax exactly 1, so every threshold placed in it is hit exactly after scaling.
        w[:block] *= 0.9 / w[:block].abs().max()
        thresholds = NF4_THRESHOLDS if quant_type == "nf4" else torch.cat([FP4_THRESHOLDS, -FP4_THRESHOLDS])
        w[0] = 1.0
        w[1 : 1 + thresholds.numel()] = thresholds
    if zero_block is not None:
        start, length = zero_block
        w[start : start + length] = 0.0
    return w.reshape(rows, cols)


CASES = [
    # name, rows, cols, quant type, block, double quant, exact ties in block 0, an all-zero block
    ("nf4_4x96_b32", 4, 96, "nf4", 32, False, True, (160, 32)),
    ("fp4_4x96_b32", 4, 96, "fp4", 32, False, True, (64, 32)),
    ("nf4_3x33_b32_odd", 3, 33, "nf4", 32, False, False, None),
    ("fp4_5x100_b64", 5, 100, "fp4", 64, False, False, None),
    ("nf4_dq_16x512_b32", 16, 512, "nf4", 32, True, False, None),
    ("fp4_dq_7x1200_b32", 7, 1200, "fp4", 32, True, False, (3200, 32)),
    ("nf4_dq_9x131_b64_odd", 9, 131, "nf4", 64, True, False, None),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="path of the JSON file to write")
    parser.add_argument("--seed", type=int, default=20230523)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    dynamic_map = signed_dynamic_map()
    cases = []
    for name, rows, cols, quant_type, block, dq, ties, zero_block in CASES:
        weight = make_weight(rows, cols, block, generator, quant_type, ties, zero_block)
        q = quantize(weight, block, quant_type, dq, dynamic_map)
        case = {
            "name": name,
            "rows": rows,
            "cols": cols,
            "quant_type": quant_type,
            "block_size": block,
            "double_quant": dq,
            "weight_f32_base64": base64_f32(weight),
            "packed_hex": hex_bytes(q["packed"]),
        }
        if dq:
            case["absmax_codes_hex"] = hex_bytes(q["absmax_codes"])
            case["absmax_scales"] = floats(q["absmax_scales"])
            case["absmax_offset"] = floats(q["absmax_offset"])[0]
        else:
            case["absmax"] = floats(q["absmax"])
        assert math.isfinite(q["dequantized"].sum().item())
        case["dequantized_f32_base64"] = base64_f32(q["dequantized"])
        cases.append(case)

    result = {
        "source": f"tests/golden/nf4_layout.py (PyTorch {torch.__version__}, seed {args.seed})",
        "dynamic_map": floats(dynamic_map),
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
