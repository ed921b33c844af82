// 4-bit (NF4 / FP4) weights in bitsandbytes' layout (see src/Runtime/Quantization/QuantizedWeight.cs):
//   element e (flat index row * cols + col) is in block e >> blockShift; codes two per byte, element 2i in the HIGH nibble
//   of byte i; value = code16[code] * scale(block).
//   scale(block) = absmax[block]                                                      (no double quantization)
//                = map256[absmaxCodes[block]] * absmaxScales[block / 256] + offset    (double quantization)
// The scale is computed in bitsandbytes' order without a fused multiply-add (__fmul_rn, __fadd_rn) so it matches the CPU.

struct Quant4Bit
{
    const u8* packed;          // [(count + 1) / 2]
    const float* code16;       // [16] code book of the type
    const float* absmax;       // [blocks] fp32 scales, or null when double-quantized
    const u8* absmaxCodes;     // [blocks] dynamic-map codes, or null
    const float* absmaxScales; // [ceil(blocks / 256)] group scales, or null
    const float* map256;       // [256] the signed dynamic map, or null
    float offset;              // mean absmax (double quantization)
    int blockShift;            // log2(block size)
};

__device__ __forceinline__ float quant4_scale(const Quant4Bit& w, i64 block)
{
    if (w.absmax) return w.absmax[block];
    return __fadd_rn(__fmul_rn(w.map256[w.absmaxCodes[block]], w.absmaxScales[block >> 8]), w.offset);
}

__device__ __forceinline__ float quant4_value(const Quant4Bit& w, i64 e)
{
    u8 byte = w.packed[e >> 1];
    int code = (e & 1) ? (byte & 0xF) : (byte >> 4);
    return w.code16[code] * quant4_scale(w, e >> w.blockShift);
}

// out[e] = dequantized element e, float32. One thread per byte (two elements; block sizes are even, so both share a scale).
extern "C" __global__ void peft_dequant4bit_f32(Quant4Bit w, float* out, i64 count)
{
    i64 bytes = (count + 1) >> 1;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < bytes; i += (i64)gridDim.x * blockDim.x)
    {
        u8 byte = w.packed[i];
        i64 e = i << 1;
        float scale = quant4_scale(w, e >> w.blockShift);
        out[e] = w.code16[byte >> 4] * scale;
        if (e + 1 < count) out[e + 1] = w.code16[byte & 0xF] * scale;
    }
}

// out[e] = bf16(dequantized element e): the operand of the bf16 cuBLAS GEMM for many-row inputs.
extern "C" __global__ void peft_dequant4bit_bf16(Quant4Bit w, bf16_t* out, i64 count)
{
    i64 bytes = (count + 1) >> 1;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < bytes; i += (i64)gridDim.x * blockDim.x)
    {
        u8 byte = w.packed[i];
        i64 e = i << 1;
        float scale = quant4_scale(w, e >> w.blockShift);
        out[e] = f32_to_bf16(w.code16[byte >> 4] * scale);
        if (e + 1 < count) out[e + 1] = f32_to_bf16(w.code16[byte & 0xF] * scale);
    }
}

#define PEFT_GEMV_MAX_ROWS 8

// Fused dequantize-and-multiply for few rows (token-by-token generation, small batches):
// y[r, o] = sum_i x[r, i] * W[o, i] for x [rows, in], W [out, in] 4-bit, y [rows, out], rows <= 8.
// One warp per output feature o; lanes walk the input features, decoding each weight once for all rows.
// accumulate: y += instead of y =.
extern "C" __global__ void peft_dequant4bit_gemv_f32(Quant4Bit w, const float* x, float* y, int rows, int outFeatures, int inFeatures, int accumulate)
{
    int warpsPerBlock = blockDim.x >> 5;
    int o = blockIdx.x * warpsPerBlock + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (o >= outFeatures) return;
    float acc[PEFT_GEMV_MAX_ROWS];
    for (int r = 0; r < PEFT_GEMV_MAX_ROWS; r++) acc[r] = 0.0f;
    i64 rowStart = (i64)o * inFeatures;
    for (int i = lane; i < inFeatures; i += 32)
    {
        float wv = quant4_value(w, rowStart + i);
        for (int r = 0; r < PEFT_GEMV_MAX_ROWS; r++)
            if (r < rows) acc[r] += x[(i64)r * inFeatures + i] * wv;
    }
    for (int r = 0; r < PEFT_GEMV_MAX_ROWS; r++)
    {
        if (r >= rows) break;
        float sum = warp_sum(acc[r]);
        if (lane == 0)
        {
            i64 at = (i64)r * outFeatures + o;
            y[at] = accumulate ? y[at] + sum : sum;
        }
    }
}
