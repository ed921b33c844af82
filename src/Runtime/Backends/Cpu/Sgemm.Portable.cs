using System.Numerics;
using System.Runtime.CompilerServices;

namespace PeftGen.Backends.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// 4 x (2 * Vector&lt;float&gt;.Count) microkernel on <see cref="Vector{T}"/>: 8 accumulators, so it
    /// fits the 16 registers of SSE/AVX2 and the 32 of NEON. MultiplyAddEstimate fuses where the
    /// hardware can and falls back to multiply + add where it cannot.
    /// </summary>
    private readonly struct PortableKernel : IMicroKernel
    {
        public static int MR => 4;
        public static int NR => 2 * Vector<float>.Count;
        public static bool UseAvx => false;

        public static void Tile(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
        {
            int w = Vector<float>.Count;
            // c{row}{half}: row of the tile, left / right Vector<float>.Count columns.
            Vector<float> c00 = default, c01 = default, c10 = default, c11 = default;
            Vector<float> c20 = default, c21 = default, c30 = default, c31 = default;
            for (int p = 0; p < kc; p++, a++, b += 2 * w)
            {
                Vector<float> b0 = Vector.Load(b), b1 = Vector.Load(b + w);
                Vector<float> ai;
                ai = new Vector<float>(a[0 * KC]); c00 = Vector.MultiplyAddEstimate(ai, b0, c00); c01 = Vector.MultiplyAddEstimate(ai, b1, c01);
                ai = new Vector<float>(a[1 * KC]); c10 = Vector.MultiplyAddEstimate(ai, b0, c10); c11 = Vector.MultiplyAddEstimate(ai, b1, c11);
                ai = new Vector<float>(a[2 * KC]); c20 = Vector.MultiplyAddEstimate(ai, b0, c20); c21 = Vector.MultiplyAddEstimate(ai, b1, c21);
                ai = new Vector<float>(a[3 * KC]); c30 = Vector.MultiplyAddEstimate(ai, b0, c30); c31 = Vector.MultiplyAddEstimate(ai, b1, c31);
            }
            Merge(c + 0 * ldc, c00, c01, alpha, beta);
            Merge(c + 1 * ldc, c10, c11, alpha, beta);
            Merge(c + 2 * ldc, c20, c21, alpha, beta);
            Merge(c + 3 * ldc, c30, c31, alpha, beta);
        }

        /// <summary>c[0..NR] = alpha * acc + beta * c; beta == 0 does not read c.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Merge(float* c, Vector<float> acc0, Vector<float> acc1, float alpha, float beta)
        {
            float* c1 = c + Vector<float>.Count;
            if (beta == 0f)
            {
                Vector.Store(acc0 * alpha, c);
                Vector.Store(acc1 * alpha, c1);
                return;
            }
            Vector.Store(Vector.MultiplyAddEstimate(acc0, new Vector<float>(alpha), Vector.Load(c) * beta), c);
            Vector.Store(Vector.MultiplyAddEstimate(acc1, new Vector<float>(alpha), Vector.Load(c1) * beta), c1);
        }
    }
}
