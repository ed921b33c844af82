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
    internal readonly struct PortableKernel : IMicroKernel
    {
        public static int MR => 4;
        public static int NR => 2 * Vector<float>.Count;
        public static bool UseAvx => false;

        public static void Tile(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
        {
            int w = Vector<float>.Count;
            // c{row}l / c{row}r: left / right Vector<float>.Count columns of one tile row.
            Vector<float> c0l = default, c0r = default, c1l = default, c1r = default;
            Vector<float> c2l = default, c2r = default, c3l = default, c3r = default;
            // Depth step p: rank-1 update with row p of B̃ (at b) and column p of Ã, whose
            // element for tile row r sits at a[r * KC] (a advances one column per step).
            for (int p = 0; p < kc; p++, a++, b += 2 * w)
            {
                Vector<float> b0 = Vector.Load(b), b1 = Vector.Load(b + w);
                Vector<float> ai;
                ai = new Vector<float>(a[0 * KC]); c0l = Vector.MultiplyAddEstimate(ai, b0, c0l); c0r = Vector.MultiplyAddEstimate(ai, b1, c0r);
                ai = new Vector<float>(a[1 * KC]); c1l = Vector.MultiplyAddEstimate(ai, b0, c1l); c1r = Vector.MultiplyAddEstimate(ai, b1, c1r);
                ai = new Vector<float>(a[2 * KC]); c2l = Vector.MultiplyAddEstimate(ai, b0, c2l); c2r = Vector.MultiplyAddEstimate(ai, b1, c2r);
                ai = new Vector<float>(a[3 * KC]); c3l = Vector.MultiplyAddEstimate(ai, b0, c3l); c3r = Vector.MultiplyAddEstimate(ai, b1, c3r);
            }
            Merge(c + 0 * ldc, c0l, c0r, alpha, beta);
            Merge(c + 1 * ldc, c1l, c1r, alpha, beta);
            Merge(c + 2 * ldc, c2l, c2r, alpha, beta);
            Merge(c + 3 * ldc, c3l, c3r, alpha, beta);
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
