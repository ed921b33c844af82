using System.Runtime.Intrinsics;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// Rotary position embedding. Each head vector is split into d/2 pairs; pair i of the token at position
/// p is rotated by the angle p · theta^(−2i/d). The rotation is orthogonal, so the backward is the same
/// rotation by the negated angle (inverse = true).
/// </summary>
internal static unsafe class RopeKernel
{
    /// <summary>
    /// Rotates every head of every token. interleaved: pairs (2i, 2i+1) (Meta / llama2.c layout);
    /// otherwise pairs (i, i + d/2) (Hugging Face rotate-half layout). y may equal x.
    /// </summary>
    public static void Apply(float* x, float* y, int b, int t, int h, int d, int positionOffset, float theta, bool interleaved, bool inverse)
    {
        // x, y: [b, t, h, d]
        if ((d & 1) != 0) throw new ArgumentException($"RoPE needs an even head size, got {d}.", nameof(d));
        int half = d / 2;
        // Tasks own whole positions, so each builds the cos/sin of its position once for all b · h heads.
        CpuParallel.ForRange(t, Math.Max(1, 4096 / Math.Max(1, b * h * d)), (start, end) =>
        {
            // Interleaved: cos/sin repeated per lane, cos = [c0, c0, c1, c1, ...], sin = [−s0, s0, −s1, s1, ...],
            // so y = x ∘ cos + pairswap(x) ∘ sin. Rotate-half: cos = [c0 .. c(d/2−1)], sin = [s0 .. s(d/2−1)].
            float* cos = stackalloc float[d]; // [d] (first d/2 used for rotate-half)
            float* sin = stackalloc float[d]; // [d]
            for (int ti = start; ti < end; ti++)
            {
                float position = positionOffset + ti;
                for (int i = 0; i < half; i++)
                {
                    // float32 throughout, matching llama2.c and Hugging Face.
                    float freq = 1f / MathF.Pow(theta, 2 * i / (float)d);
                    float angle = position * freq;
                    float c = MathF.Cos(angle);
                    float s = inverse ? -MathF.Sin(angle) : MathF.Sin(angle);
                    if (interleaved)
                    {
                        cos[2 * i] = c;
                        cos[2 * i + 1] = c;
                        sin[2 * i] = -s;
                        sin[2 * i + 1] = s;
                    }
                    else
                    {
                        cos[i] = c;
                        sin[i] = s;
                    }
                }
                for (int bi = 0; bi < b; bi++)
                {
                    for (int hi = 0; hi < h; hi++)
                    {
                        long o = (((long)bi * t + ti) * h + hi) * d;
                        if (interleaved) RotateInterleaved(x + o, y + o, cos, sin, d);
                        else RotateHalf(x + o, y + o, cos, sin, half);
                    }
                }
            }
        });
    }

    // y = x ∘ cos + pairswap(x) ∘ sin over one head of d (even) elements. The shuffle indices are
    // written inline so the JIT sees constants and emits a single in-lane permute.
    private static void RotateInterleaved(float* x, float* y, float* cos, float* sin, int d)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= d - 16; i += 16)
            {
                var v = Vector512.Load(x + i);
                var swapped = Vector512.Shuffle(v, Vector512.Create(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
                Vector512.FusedMultiplyAdd(v, Vector512.Load(cos + i), swapped * Vector512.Load(sin + i)).Store(y + i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= d - 8; i += 8)
            {
                var v = Vector256.Load(x + i);
                var swapped = Vector256.Shuffle(v, Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6));
                Vector256.FusedMultiplyAdd(v, Vector256.Load(cos + i), swapped * Vector256.Load(sin + i)).Store(y + i);
            }
        }
        for (; i < d; i += 2)
        {
            float x0 = x[i], x1 = x[i + 1];
            y[i] = x0 * cos[i] + x1 * sin[i];
            y[i + 1] = x1 * cos[i + 1] + x0 * sin[i + 1];
        }
    }

    // (y[i], y[i + half]) = (x[i] c − x[i + half] s, x[i + half] c + x[i] s) over one head.
    private static void RotateHalf(float* x, float* y, float* cos, float* sin, int half)
    {
        float* x2 = x + half, y2 = y + half;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= half - 16; i += 16)
            {
                var a = Vector512.Load(x + i);
                var b = Vector512.Load(x2 + i);
                var c = Vector512.Load(cos + i);
                var s = Vector512.Load(sin + i);
                (a * c - b * s).Store(y + i);
                (b * c + a * s).Store(y2 + i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= half - 8; i += 8)
            {
                var a = Vector256.Load(x + i);
                var b = Vector256.Load(x2 + i);
                var c = Vector256.Load(cos + i);
                var s = Vector256.Load(sin + i);
                (a * c - b * s).Store(y + i);
                (b * c + a * s).Store(y2 + i);
            }
        }
        for (; i < half; i++)
        {
            float a = x[i], bb = x2[i];
            y[i] = a * cos[i] - bb * sin[i];
            y2[i] = bb * cos[i] + a * sin[i];
        }
    }
}
