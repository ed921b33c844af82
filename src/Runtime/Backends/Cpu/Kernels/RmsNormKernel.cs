using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// RMSNorm: y = x · rstd · w with rstd = 1 / sqrt(mean(x²) + eps) per row.
/// </summary>
internal static unsafe class RmsNormKernel
{
    // Caller-thread buffer for the per-chunk dw partial sums, on the pinned object heap so the raw
    // pointer handed to the workers stays valid without a fixed block.
    [ThreadStatic] private static float[]? t_dwPartials;

    /// <summary>y = x · rstd · w per row; rstd saved for the backward.</summary>
    public static void Forward(float* x, float* w, float* y, float* rstd, int n, int c, float eps)
    {
        // x, y: [n, c]; w: [c]; rstd: [n]
        CpuParallel.ForRange(n, SoftmaxKernel.RowsPerTask(c), (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                float* xr = x + (long)r * c;
                float rs = 1f / MathF.Sqrt(SoftmaxKernel.Dot(xr, xr, c) / c + eps);
                rstd[r] = rs;
                ScaleByWeight(xr, w, y + (long)r * c, c, rs);
            }
        });
    }

    /// <summary>
    /// dx = rstd · (dy ∘ w) − rstd³ / c · (Σ dy ∘ w ∘ x) · x (written, or added when accumulateDx);
    /// dw += Σ_rows dy ∘ x · rstd, skipped when dw is null.
    /// </summary>
    public static void Backward(float* dy, float* x, float* w, float* rstd, float* dx, float* dw, int n, int c, bool accumulateDx)
    {
        // dy, x, dx: [n, c]; w, dw: [c]; rstd: [n]
        // dw sums over all rows. For results independent of the thread count the rows are cut into
        // chunks whose size depends only on n; each chunk writes its own partial [c] row, and the
        // partials are then added into dw in chunk order.
        int chunkRows = Math.Max(32, (n + 255) / 256);
        int chunks = (n + chunkRows - 1) / chunkRows;
        float* partials = dw == null ? null : DwPartials((long)chunks * c); // [chunks, c]
        CpuParallel.ForRange(chunks, 1, (chunkStart, chunkEnd) =>
        {
            for (int chunk = chunkStart; chunk < chunkEnd; chunk++)
            {
                float* partial = partials == null ? null : partials + (long)chunk * c;
                if (partial != null) new Span<float>(partial, c).Clear();
                int rowEnd = Math.Min(n, (chunk + 1) * chunkRows);
                for (int r = chunk * chunkRows; r < rowEnd; r++)
                {
                    long o = (long)r * c;
                    BackwardRow(dy + o, x + o, w, rstd[r], dx + o, partial, c, accumulateDx);
                }
            }
        });
        if (dw == null) return;
        for (int chunk = 0; chunk < chunks; chunk++) Accumulate(dw, partials + (long)chunk * c, c);
    }

    // y = x ∘ w · s over one row.
    private static void ScaleByWeight(float* x, float* w, float* y, int c, float s)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var vs = Vector512.Create(s);
            for (; i <= c - 16; i += 16) (Vector512.Load(x + i) * vs * Vector512.Load(w + i)).Store(y + i);
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var vs = Vector256.Create(s);
            for (; i <= c - 8; i += 8) (Vector256.Load(x + i) * vs * Vector256.Load(w + i)).Store(y + i);
        }
        for (; i < c; i++) y[i] = x[i] * s * w[i];
    }

    // One row of the backward: first Σ dy ∘ w ∘ x, then dx and (when partial is not null) partial += dy ∘ x · rstd.
    private static void BackwardRow(float* dy, float* x, float* w, float rs, float* dx, float* partial, int c, bool accumulateDx)
    {
        float dot = 0f;
        int i = 0;
        var acc256 = Vector256<float>.Zero;
        if (Vector512.IsHardwareAccelerated)
        {
            var acc512 = Vector512<float>.Zero;
            for (; i <= c - 16; i += 16)
                acc512 = Vector512.FusedMultiplyAdd(Vector512.Load(dy + i) * Vector512.Load(w + i), Vector512.Load(x + i), acc512);
            acc256 = acc512.GetLower() + acc512.GetUpper();
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= c - 8; i += 8)
                acc256 = Vector256.FusedMultiplyAdd(Vector256.Load(dy + i) * Vector256.Load(w + i), Vector256.Load(x + i), acc256);
            dot = Vector256.Sum(acc256);
        }
        for (; i < c; i++) dot += dy[i] * w[i] * x[i];

        // dx = rs · dy ∘ w − k · x
        float k = rs * rs * rs * dot / c;
        i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var vrs = Vector512.Create(rs);
            var vk = Vector512.Create(k);
            for (; i <= c - 16; i += 16)
            {
                var vdy = Vector512.Load(dy + i);
                var vx = Vector512.Load(x + i);
                var g = vrs * vdy * Vector512.Load(w + i) - vk * vx;
                if (accumulateDx) g += Vector512.Load(dx + i);
                g.Store(dx + i);
                if (partial != null) Vector512.FusedMultiplyAdd(vdy * vx, vrs, Vector512.Load(partial + i)).Store(partial + i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var vrs = Vector256.Create(rs);
            var vk = Vector256.Create(k);
            for (; i <= c - 8; i += 8)
            {
                var vdy = Vector256.Load(dy + i);
                var vx = Vector256.Load(x + i);
                var g = vrs * vdy * Vector256.Load(w + i) - vk * vx;
                if (accumulateDx) g += Vector256.Load(dx + i);
                g.Store(dx + i);
                if (partial != null) Vector256.FusedMultiplyAdd(vdy * vx, vrs, Vector256.Load(partial + i)).Store(partial + i);
            }
        }
        for (; i < c; i++)
        {
            float xi = x[i], dyi = dy[i];
            float g = rs * dyi * w[i] - k * xi;
            dx[i] = accumulateDx ? dx[i] + g : g;
            if (partial != null) partial[i] += dyi * xi * rs;
        }
    }

    // dst += src over c elements.
    private static void Accumulate(float* dst, float* src, int c)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= c - 16; i += 16) (Vector512.Load(dst + i) + Vector512.Load(src + i)).Store(dst + i);
        if (Vector256.IsHardwareAccelerated)
            for (; i <= c - 8; i += 8) (Vector256.Load(dst + i) + Vector256.Load(src + i)).Store(dst + i);
        for (; i < c; i++) dst[i] += src[i];
    }

    private static float* DwPartials(long length)
    {
        var buffer = t_dwPartials;
        if (buffer == null || buffer.LongLength < length)
            t_dwPartials = buffer = GC.AllocateUninitializedArray<float>(checked((int)length), pinned: true);
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
    }
}
