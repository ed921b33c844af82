using System.Runtime.Intrinsics;
using PeftGen.Quantization;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// Matrix products with a frozen 4-bit weight W [out, in] that never materialise W in float: the GEMM paths run
/// <see cref="TiledWeightMatMulKernel"/> on tiles dequantized by <see cref="QuantizedTileSource"/>. A single row of x
/// (token-by-token generation) takes a fused dequantize-dot GEMV instead, which reads 4 bits per weight and never writes a
/// dequantized value; a single row of dy takes the shared transposed GEMV, decoding one row slice at a time into L1.
/// </summary>
internal static unsafe class Dequant4BitMatMulKernel
{
    /// <summary>y [rows, out] = x [rows, in] · dequant(W)ᵀ.</summary>
    public static void Forward(float* x, QuantizedWeight weight, float* y, int rows)
    {
        if (rows == 1) Gemv(x, weight, y, NibbleDecoders.Best);
        else ForwardTiled(x, weight, y, rows);
    }

    /// <summary>dx [rows, in] (+)= dy [rows, out] · dequant(W); accumulate adds into dx.</summary>
    public static void BackwardInput(float* dy, QuantizedWeight weight, float* dx, int rows, bool accumulate) =>
        TiledWeightMatMulKernel.BackwardInput(dy, new QuantizedTileSource(weight, NibbleDecoders.Best), dx, rows, accumulate);

    /// <summary>The input gradient through dequantized tiles and SGEMM, for any number of rows (the GEMM path).</summary>
    internal static void BackwardTiled(float* dy, QuantizedWeight weight, float* dx, int rows, bool accumulate) =>
        TiledWeightMatMulKernel.BackwardTiled(dy, new QuantizedTileSource(weight, NibbleDecoders.Best), dx, rows, accumulate);

    /// <summary>The forward through dequantized tiles and SGEMM, for any number of rows (the GEMM path).</summary>
    internal static void ForwardTiled(float* x, QuantizedWeight weight, float* y, int rows) =>
        TiledWeightMatMulKernel.ForwardTiled(x, new QuantizedTileSource(weight, NibbleDecoders.Best), y, rows);

    /// <summary>
    /// y [out] = dequant(W) · x [in] for one row of x, fused: each weight row is decoded in registers and
    /// dotted with x block by block (Σ over blocks of scale · Σ code value · x), split across threads by rows.
    /// </summary>
    internal static void Gemv(float* x, QuantizedWeight weight, float* y, NibbleDecoder decoder)
    {
        int cols = weight.Columns;
        CpuParallel.ForRange(weight.Rows, Math.Max(1, TiledWeightMatMulKernel.MinFloatsPerThread / cols), (r0, r1) =>
        {
            for (int r = r0; r < r1; r++) y[r] = DotRow(weight, r, x, decoder);
        });
    }

    /// <summary>dx [in] (+)= dy [out] · dequant(W) for one row of dy (the shared transposed GEMV on 4-bit row slices).</summary>
    internal static void GemvTransposed(float* dy, QuantizedWeight weight, float* dx, bool accumulate, NibbleDecoder decoder) =>
        TiledWeightMatMulKernel.GemvTransposed(dy, new QuantizedTileSource(weight, decoder), dx, accumulate);

    /// <summary>Σ_c dequant(W)[row, c] · x[c].</summary>
    internal static float DotRow(QuantizedWeight weight, int row, float* x, NibbleDecoder decoder)
    {
        byte* packed = weight.PackedData;
        float* lut = weight.CodeValues;
        int shift = weight.BlockShift;
        long e = (long)row * weight.Columns, end = e + weight.Columns;
        float* xr = x;
        float total = 0f;
        var acc512 = Vector512<float>.Zero;
        var acc256 = Vector256<float>.Zero;
        while (e < end)
        {
            // One run: the row's elements inside a single block, so one scale multiplies the whole partial dot.
            int block = (int)(e >> shift);
            int n = (int)(Math.Min(end, (long)(block + 1) << shift) - e);
            float scale = weight.BlockScaleUnchecked(block);
            float run = 0f;
            int i = 0;
            if ((e & 1) != 0)
            {
                run = lut[packed[e >> 1] & 0xF] * xr[0];
                i = 1;
            }
            byte* p = packed + ((e + i) >> 1);
            if (decoder == NibbleDecoder.Avx512)
            {
                var table = Vector512.Load(lut);
                Vector512<float> s0 = Vector512<float>.Zero, s1 = Vector512<float>.Zero;
                for (; i + 32 <= n; i += 32, p += 16)
                {
                    NibbleLookup.Lookup32(p, table, out var v0, out var v1);
                    s0 = Vector512.FusedMultiplyAdd(v0, Vector512.Load(xr + i), s0);
                    s1 = Vector512.FusedMultiplyAdd(v1, Vector512.Load(xr + i + 16), s1);
                }
                for (; i + 16 <= n; i += 16, p += 8)
                    s0 = Vector512.FusedMultiplyAdd(NibbleLookup.Lookup16(p, table), Vector512.Load(xr + i), s0);
                acc512 = Vector512.FusedMultiplyAdd(s0 + s1, Vector512.Create(scale), acc512);
            }
            else if (decoder == NibbleDecoder.Avx2)
            {
                var low = Vector256.Load(lut);
                var high = Vector256.Load(lut + 8);
                Vector256<float> s0 = Vector256<float>.Zero, s1 = Vector256<float>.Zero;
                for (; i + 32 <= n; i += 32, p += 16)
                {
                    NibbleLookup.Lookup32(p, low, high, out var v0, out var v1, out var v2, out var v3);
                    s0 = Vector256.FusedMultiplyAdd(v0, Vector256.Load(xr + i), s0);
                    s1 = Vector256.FusedMultiplyAdd(v1, Vector256.Load(xr + i + 8), s1);
                    s0 = Vector256.FusedMultiplyAdd(v2, Vector256.Load(xr + i + 16), s0);
                    s1 = Vector256.FusedMultiplyAdd(v3, Vector256.Load(xr + i + 24), s1);
                }
                acc256 = Vector256.FusedMultiplyAdd(s0 + s1, Vector256.Create(scale), acc256);
            }
            for (; i + 2 <= n; i += 2, p++)
                run += lut[*p >> 4] * xr[i] + lut[*p & 0xF] * xr[i + 1];
            if (i < n) run += lut[*p >> 4] * xr[i];
            total += run * scale;
            e += n;
            xr += n;
        }
        return total + Vector512.Sum(acc512) + Vector256.Sum(acc256);
    }
}
