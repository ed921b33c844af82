using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// Row-wise softmax over the last dimension, plus the vectorised row primitives (exp, max,
/// shifted exp-sum, dot) that the other exponentiating kernels (attention, cross-entropy, SwiGLU) share.
/// </summary>
internal static unsafe class SoftmaxKernel
{
    /// <summary>y = exp(x − rowmax) / Σ exp(x − rowmax), row by row. y may equal x.</summary>
    public static void Forward(float* x, float* y, int rows, int cols)
    {
        // x, y: [rows, cols]
        CpuParallel.ForRange(rows, RowsPerTask(cols), (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                float* xr = x + (long)r * cols;
                float* yr = y + (long)r * cols;
                float max = RowMax(xr, cols);
                float sum = ExpShift(xr, yr, cols, max, 1f);
                Scale(yr, cols, 1f / sum);
            }
        });
    }

    /// <summary>dx = y ∘ (dy − Σ dy ∘ y), row by row; written, or added to dx when accumulate.</summary>
    public static void Backward(float* dy, float* y, float* dx, int rows, int cols, bool accumulate)
    {
        // dy, y, dx: [rows, cols]
        CpuParallel.ForRange(rows, RowsPerTask(cols), (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                long o = (long)r * cols;
                float dot = Dot(dy + o, y + o, cols);
                BackwardRow(dy + o, y + o, dx + o, cols, dot, accumulate);
            }
        });
    }

    /// <summary>Rows per parallel task so that each task touches at least ~16K elements.</summary>
    internal static int RowsPerTask(int cols) => Math.Max(1, 16384 / Math.Max(1, cols));

    /// <summary>
    /// dx = y ∘ (dy − dot) over one row of n elements (written, or added when accumulate): the softmax
    /// Jacobian-vector product once dot = Σ dy ∘ y is known. dx may equal dy.
    /// </summary>
    internal static void BackwardRow(float* dy, float* y, float* dx, int n, float dot, bool accumulate)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var vdot = Vector512.Create(dot);
            for (; i <= n - 16; i += 16)
            {
                var g = Vector512.Load(y + i) * (Vector512.Load(dy + i) - vdot);
                if (accumulate) g += Vector512.Load(dx + i);
                g.Store(dx + i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var vdot = Vector256.Create(dot);
            for (; i <= n - 8; i += 8)
            {
                var g = Vector256.Load(y + i) * (Vector256.Load(dy + i) - vdot);
                if (accumulate) g += Vector256.Load(dx + i);
                g.Store(dx + i);
            }
        }
        for (; i < n; i++)
        {
            float g = y[i] * (dy[i] - dot);
            dx[i] = accumulate ? dx[i] + g : g;
        }
    }

    /// <summary>Largest of x[0..n); −∞ when n is 0, NaN when any element is NaN.</summary>
    internal static float RowMax(float* x, int n)
    {
        int i = 0;
        var max256 = Vector256.Create(float.NegativeInfinity);
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var max512 = Vector512.Load(x);
            for (i = 16; i <= n - 16; i += 16) max512 = Vector512.Max(max512, Vector512.Load(x + i));
            max256 = Vector256.Max(max512.GetLower(), max512.GetUpper());
        }
        float max = float.NegativeInfinity;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - 8; i += 8) max256 = Vector256.Max(max256, Vector256.Load(x + i));
            for (int k = 0; k < Vector256<float>.Count; k++) max = MathF.Max(max, max256.GetElement(k));
        }
        for (; i < n; i++) max = MathF.Max(max, x[i]);
        return max;
    }

    /// <summary>Σ exp(x[i] − shift) over x[0..n) without storing anything (the log-sum-exp denominator).</summary>
    internal static float SumExpShift(float* x, int n, float shift)
    {
        int i = 0;
        var sum256 = Vector256<float>.Zero;
        if (Vector512.IsHardwareAccelerated)
        {
            var vshift = Vector512.Create(shift);
            var sum512 = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16) sum512 += Exp(Vector512.Load(x + i) - vshift);
            sum256 = sum512.GetLower() + sum512.GetUpper();
        }
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated)
        {
            var vshift = Vector256.Create(shift);
            for (; i <= n - 8; i += 8) sum256 += Exp(Vector256.Load(x + i) - vshift);
            sum = Vector256.Sum(sum256);
        }
        for (; i < n; i++) sum += MathF.Exp(x[i] - shift);
        return sum;
    }

    /// <summary>y[i] = scale · exp(x[i] − shift) over n elements; returns Σ y. y may equal x.</summary>
    internal static float ExpShift(float* x, float* y, int n, float shift, float scale)
    {
        int i = 0;
        var sum256 = Vector256<float>.Zero;
        if (Vector512.IsHardwareAccelerated)
        {
            var vshift = Vector512.Create(shift);
            var vscale = Vector512.Create(scale);
            var sum512 = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var e = Exp(Vector512.Load(x + i) - vshift) * vscale;
                e.Store(y + i);
                sum512 += e;
            }
            sum256 = sum512.GetLower() + sum512.GetUpper();
        }
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated)
        {
            var vshift = Vector256.Create(shift);
            var vscale = Vector256.Create(scale);
            for (; i <= n - 8; i += 8)
            {
                var e = Exp(Vector256.Load(x + i) - vshift) * vscale;
                e.Store(y + i);
                sum256 += e;
            }
            sum = Vector256.Sum(sum256);
        }
        for (; i < n; i++)
        {
            float e = scale * MathF.Exp(x[i] - shift);
            y[i] = e;
            sum += e;
        }
        return sum;
    }

    /// <summary>x[i] *= s over n elements.</summary>
    internal static void Scale(float* x, int n, float s)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var vs = Vector512.Create(s);
            for (; i <= n - 16; i += 16) (Vector512.Load(x + i) * vs).Store(x + i);
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var vs = Vector256.Create(s);
            for (; i <= n - 8; i += 8) (Vector256.Load(x + i) * vs).Store(x + i);
        }
        for (; i < n; i++) x[i] *= s;
    }

    /// <summary>Σ a[i] · b[i] over n elements.</summary>
    internal static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        var acc256 = Vector256<float>.Zero;
        if (Vector512.IsHardwareAccelerated)
        {
            var acc512 = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16) acc512 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), acc512);
            acc256 = acc512.GetLower() + acc512.GetUpper();
        }
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - 8; i += 8) acc256 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), acc256);
            sum = Vector256.Sum(acc256);
        }
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    // Vectorised exp: Cody–Waite range reduction x = k·ln2 + r with |r| ≤ ln2/2, then a degree-7 Taylor
    // polynomial for e^r (truncation error r⁸/8! < 6e-9, so ~1e-7 relative overall) and 2^k built from
    // the exponent bits. The built-in Vector512.Exp widens to double and is ~20x slower.
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693359375f;          // ln 2 rounded to 9 bits, so k · Ln2Hi is exact
    private const float Ln2Lo = -2.12194440e-4f;       // ln 2 − Ln2Hi
    // Below ExpMin the result (< 2.8e-38) flushes to 0: 2^(k−1) must stay a normal float for k ≥ −125.
    private const float ExpMin = -86.5f;
    // ln(float.MaxValue); above it the result is +∞.
    private const float ExpMax = 88.72283f;

    /// <summary>e^x per lane, relative error ≲ 1e-7; 0 below −86.5, +∞ above ln(float.MaxValue), NaN stays NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Exp(Vector512<float> x)
    {
        // Clamp (not ClampNative) so NaN propagates through the polynomial.
        var xc = Vector512.Clamp(x, Vector512.Create(ExpMin), Vector512.Create(ExpMax));
        var k = Vector512.Round(xc * Log2E);
        var r = Vector512.FusedMultiplyAdd(k, Vector512.Create(-Ln2Hi), xc);
        r = Vector512.FusedMultiplyAdd(k, Vector512.Create(-Ln2Lo), r);
        var p = Vector512.Create(1f / 5040f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 720f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 120f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 24f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 6f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(0.5f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        // 2^k as 2^(k−1) · 2 so that k = 128 (x near ExpMax) does not overflow the exponent field.
        var pow2 = Vector512.ShiftLeft(Vector512.ConvertToInt32(k) + Vector512.Create(126), 23).AsSingle();
        var y = p * pow2 * 2f;
        y = Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(ExpMin)), Vector512<float>.Zero, y);
        return Vector512.ConditionalSelect(Vector512.GreaterThan(x, Vector512.Create(ExpMax)), Vector512.Create(float.PositiveInfinity), y);
    }

    /// <summary>e^x per lane; the 256-bit twin of <see cref="Exp(Vector512{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Exp(Vector256<float> x)
    {
        var xc = Vector256.Clamp(x, Vector256.Create(ExpMin), Vector256.Create(ExpMax));
        var k = Vector256.Round(xc * Log2E);
        var r = Vector256.FusedMultiplyAdd(k, Vector256.Create(-Ln2Hi), xc);
        r = Vector256.FusedMultiplyAdd(k, Vector256.Create(-Ln2Lo), r);
        var p = Vector256.Create(1f / 5040f);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 720f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 120f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 24f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 6f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(0.5f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256<float>.One);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256<float>.One);
        var pow2 = Vector256.ShiftLeft(Vector256.ConvertToInt32(k) + Vector256.Create(126), 23).AsSingle();
        var y = p * pow2 * 2f;
        y = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(ExpMin)), Vector256<float>.Zero, y);
        return Vector256.ConditionalSelect(Vector256.GreaterThan(x, Vector256.Create(ExpMax)), Vector256.Create(float.PositiveInfinity), y);
    }
}
