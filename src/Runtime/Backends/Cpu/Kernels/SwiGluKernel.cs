using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// SwiGLU (the Llama MLP nonlinearity) y = silu(gate) ∘ up, and plain SiLU, silu(g) = g · sigmoid(g).
/// Elementwise, so outputs may alias inputs.
/// </summary>
internal static unsafe class SwiGluKernel
{
    // Elements per parallel block: large enough that a block dwarfs the scheduling cost.
    private const int BlockSize = 16384;

    /// <summary>y = silu(gate) ∘ up.</summary>
    public static void Forward(float* gate, float* up, float* y, long count)
    {
        // gate, up, y: [count]
        ForBlocks(count, (start, n) =>
        {
            float* g = gate + start, u = up + start, o = y + start;
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= n - 16; i += 16)
                {
                    var vg = Vector512.Load(g + i);
                    (vg * Sigmoid(vg) * Vector512.Load(u + i)).Store(o + i);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= n - 8; i += 8)
                {
                    var vg = Vector256.Load(g + i);
                    (vg * Sigmoid(vg) * Vector256.Load(u + i)).Store(o + i);
                }
            }
            for (; i < n; i++) o[i] = g[i] * Sigmoid(g[i]) * u[i];
        });
    }

    /// <summary>
    /// dgate = dy ∘ up ∘ silu'(gate), dup = dy ∘ silu(gate), with silu'(g) = s · (1 + g · (1 − s)), s = sigmoid(g).
    /// Written, or added into dgate and dup when accumulate.
    /// </summary>
    public static void Backward(float* dy, float* gate, float* up, float* dgate, float* dup, long count, bool accumulate)
    {
        // dy, gate, up, dgate, dup: [count]
        ForBlocks(count, (start, n) =>
        {
            float* d = dy + start, g = gate + start, u = up + start, dg = dgate + start, du = dup + start;
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= n - 16; i += 16)
                {
                    var vd = Vector512.Load(d + i);
                    var vg = Vector512.Load(g + i);
                    var vu = Vector512.Load(u + i);
                    var s = Sigmoid(vg);
                    var gradGate = vd * vu * s * (Vector512<float>.One + vg * (Vector512<float>.One - s));
                    var gradUp = vd * vg * s;
                    if (accumulate)
                    {
                        gradGate += Vector512.Load(dg + i);
                        gradUp += Vector512.Load(du + i);
                    }
                    gradGate.Store(dg + i);
                    gradUp.Store(du + i);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= n - 8; i += 8)
                {
                    var vd = Vector256.Load(d + i);
                    var vg = Vector256.Load(g + i);
                    var vu = Vector256.Load(u + i);
                    var s = Sigmoid(vg);
                    var gradGate = vd * vu * s * (Vector256<float>.One + vg * (Vector256<float>.One - s));
                    var gradUp = vd * vg * s;
                    if (accumulate)
                    {
                        gradGate += Vector256.Load(dg + i);
                        gradUp += Vector256.Load(du + i);
                    }
                    gradGate.Store(dg + i);
                    gradUp.Store(du + i);
                }
            }
            for (; i < n; i++)
            {
                float vg = g[i], s = Sigmoid(vg);
                float gradGate = d[i] * u[i] * s * (1f + vg * (1f - s));
                float gradUp = d[i] * vg * s;
                dg[i] = accumulate ? dg[i] + gradGate : gradGate;
                du[i] = accumulate ? du[i] + gradUp : gradUp;
            }
        });
    }

    /// <summary>y = silu(x) = x · sigmoid(x).</summary>
    public static void SiluForward(float* x, float* y, long count)
    {
        // x, y: [count]
        ForBlocks(count, (start, n) =>
        {
            float* xs = x + start, o = y + start;
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= n - 16; i += 16)
                {
                    var vx = Vector512.Load(xs + i);
                    (vx * Sigmoid(vx)).Store(o + i);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= n - 8; i += 8)
                {
                    var vx = Vector256.Load(xs + i);
                    (vx * Sigmoid(vx)).Store(o + i);
                }
            }
            for (; i < n; i++) o[i] = xs[i] * Sigmoid(xs[i]);
        });
    }

    /// <summary>dx = dy ∘ silu'(x), written or added when accumulate.</summary>
    public static void SiluBackward(float* dy, float* x, float* dx, long count, bool accumulate)
    {
        // dy, x, dx: [count]
        ForBlocks(count, (start, n) =>
        {
            float* d = dy + start, xs = x + start, o = dx + start;
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= n - 16; i += 16)
                {
                    var vx = Vector512.Load(xs + i);
                    var s = Sigmoid(vx);
                    var grad = Vector512.Load(d + i) * s * (Vector512<float>.One + vx * (Vector512<float>.One - s));
                    if (accumulate) grad += Vector512.Load(o + i);
                    grad.Store(o + i);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= n - 8; i += 8)
                {
                    var vx = Vector256.Load(xs + i);
                    var s = Sigmoid(vx);
                    var grad = Vector256.Load(d + i) * s * (Vector256<float>.One + vx * (Vector256<float>.One - s));
                    if (accumulate) grad += Vector256.Load(o + i);
                    grad.Store(o + i);
                }
            }
            for (; i < n; i++)
            {
                float s = Sigmoid(xs[i]);
                float grad = d[i] * s * (1f + xs[i] * (1f - s));
                o[i] = accumulate ? o[i] + grad : grad;
            }
        });
    }

    // Runs body(start, length) over fixed blocks of [0, count), spread across threads; count may exceed int.MaxValue.
    private static void ForBlocks(long count, Action<long, int> body)
    {
        if (count <= 0) return;
        int blocks = checked((int)((count + BlockSize - 1) / BlockSize));
        CpuParallel.ForRange(blocks, 1, (first, last) =>
        {
            for (int block = first; block < last; block++)
            {
                long start = (long)block * BlockSize;
                body(start, (int)Math.Min(BlockSize, count - start));
            }
        });
    }

    // sigmoid(g) = 1 / (1 + e^−g); e^−g → +∞ for very negative g gives exactly 0, as it should.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Sigmoid(Vector512<float> g) =>
        Vector512<float>.One / (Vector512<float>.One + SoftmaxKernel.Exp(-g));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Sigmoid(Vector256<float> g) =>
        Vector256<float>.One / (Vector256<float>.One + SoftmaxKernel.Exp(-g));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sigmoid(float g) => 1f / (1f + MathF.Exp(-g));
}
