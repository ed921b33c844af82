using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// 6 x 16 AVX2 + FMA3 microkernel: 12 ymm accumulators, two ymm of B per depth step and one
    /// broadcast of A, which is 15 of the 16 registers.
    /// </summary>
    internal readonly struct Avx2Kernel : IMicroKernel
    {
        public static int MR => 6;
        public static int NR => 16;
        public static bool UseAvx => true;

        public static void Tile(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
        {
            // The C tile is touched only after the loop; start pulling its 12 lines in now.
            Sse.Prefetch0(c + 0 * ldc); Sse.Prefetch0(c + 0 * ldc + 8);
            Sse.Prefetch0(c + 1 * ldc); Sse.Prefetch0(c + 1 * ldc + 8);
            Sse.Prefetch0(c + 2 * ldc); Sse.Prefetch0(c + 2 * ldc + 8);
            Sse.Prefetch0(c + 3 * ldc); Sse.Prefetch0(c + 3 * ldc + 8);
            Sse.Prefetch0(c + 4 * ldc); Sse.Prefetch0(c + 4 * ldc + 8);
            Sse.Prefetch0(c + 5 * ldc); Sse.Prefetch0(c + 5 * ldc + 8);

            // c{row}l / c{row}r: left / right 8 columns of one tile row.
            Vector256<float> c0l = default, c0r = default, c1l = default, c1r = default;
            Vector256<float> c2l = default, c2r = default, c3l = default, c3r = default;
            Vector256<float> c4l = default, c4r = default, c5l = default, c5r = default;
            // Depth step p: rank-1 update with row p of B̃ (at b) and column p of Ã, whose
            // element for tile row r sits at a[r * KC] (a advances one column per step).
            for (int p = 0; p < kc; p++, a++, b += 16)
            {
                Vector256<float> b0 = Vector256.Load(b), b1 = Vector256.Load(b + 8);
                Vector256<float> ai;
                ai = Vector256.Create(a[0 * KC]); c0l = Fma.MultiplyAdd(ai, b0, c0l); c0r = Fma.MultiplyAdd(ai, b1, c0r);
                ai = Vector256.Create(a[1 * KC]); c1l = Fma.MultiplyAdd(ai, b0, c1l); c1r = Fma.MultiplyAdd(ai, b1, c1r);
                ai = Vector256.Create(a[2 * KC]); c2l = Fma.MultiplyAdd(ai, b0, c2l); c2r = Fma.MultiplyAdd(ai, b1, c2r);
                ai = Vector256.Create(a[3 * KC]); c3l = Fma.MultiplyAdd(ai, b0, c3l); c3r = Fma.MultiplyAdd(ai, b1, c3r);
                ai = Vector256.Create(a[4 * KC]); c4l = Fma.MultiplyAdd(ai, b0, c4l); c4r = Fma.MultiplyAdd(ai, b1, c4r);
                ai = Vector256.Create(a[5 * KC]); c5l = Fma.MultiplyAdd(ai, b0, c5l); c5r = Fma.MultiplyAdd(ai, b1, c5r);
            }

            Vector256<float> va = Vector256.Create(alpha);
            if (beta == 0f)
            {
                Store(c + 0 * ldc, c0l * va, c0r * va);
                Store(c + 1 * ldc, c1l * va, c1r * va);
                Store(c + 2 * ldc, c2l * va, c2r * va);
                Store(c + 3 * ldc, c3l * va, c3r * va);
                Store(c + 4 * ldc, c4l * va, c4r * va);
                Store(c + 5 * ldc, c5l * va, c5r * va);
                return;
            }
            Vector256<float> vb = Vector256.Create(beta);
            Merge(c + 0 * ldc, c0l, c0r, va, vb);
            Merge(c + 1 * ldc, c1l, c1r, va, vb);
            Merge(c + 2 * ldc, c2l, c2r, va, vb);
            Merge(c + 3 * ldc, c3l, c3r, va, vb);
            Merge(c + 4 * ldc, c4l, c4r, va, vb);
            Merge(c + 5 * ldc, c5l, c5r, va, vb);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Store(float* c, Vector256<float> v0, Vector256<float> v1)
        {
            Vector256.Store(v0, c);
            Vector256.Store(v1, c + 8);
        }

        /// <summary>c[0..16] = alpha * acc + beta * c.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Merge(float* c, Vector256<float> acc0, Vector256<float> acc1, Vector256<float> alpha, Vector256<float> beta)
        {
            Vector256.Store(Fma.MultiplyAdd(acc0, alpha, Vector256.Load(c) * beta), c);
            Vector256.Store(Fma.MultiplyAdd(acc1, alpha, Vector256.Load(c + 8) * beta), c + 8);
        }
    }
}
