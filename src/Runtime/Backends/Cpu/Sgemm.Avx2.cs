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
    private readonly struct Avx2Kernel : IMicroKernel
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

            // c{row}{half}: row of the tile, left / right 8 columns.
            Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default;
            Vector256<float> c20 = default, c21 = default, c30 = default, c31 = default;
            Vector256<float> c40 = default, c41 = default, c50 = default, c51 = default;
            for (int p = 0; p < kc; p++, a++, b += 16)
            {
                Vector256<float> b0 = Vector256.Load(b), b1 = Vector256.Load(b + 8);
                Vector256<float> ai;
                ai = Vector256.Create(a[0 * KC]); c00 = Fma.MultiplyAdd(ai, b0, c00); c01 = Fma.MultiplyAdd(ai, b1, c01);
                ai = Vector256.Create(a[1 * KC]); c10 = Fma.MultiplyAdd(ai, b0, c10); c11 = Fma.MultiplyAdd(ai, b1, c11);
                ai = Vector256.Create(a[2 * KC]); c20 = Fma.MultiplyAdd(ai, b0, c20); c21 = Fma.MultiplyAdd(ai, b1, c21);
                ai = Vector256.Create(a[3 * KC]); c30 = Fma.MultiplyAdd(ai, b0, c30); c31 = Fma.MultiplyAdd(ai, b1, c31);
                ai = Vector256.Create(a[4 * KC]); c40 = Fma.MultiplyAdd(ai, b0, c40); c41 = Fma.MultiplyAdd(ai, b1, c41);
                ai = Vector256.Create(a[5 * KC]); c50 = Fma.MultiplyAdd(ai, b0, c50); c51 = Fma.MultiplyAdd(ai, b1, c51);
            }

            Vector256<float> va = Vector256.Create(alpha);
            if (beta == 0f)
            {
                Store(c + 0 * ldc, c00 * va, c01 * va);
                Store(c + 1 * ldc, c10 * va, c11 * va);
                Store(c + 2 * ldc, c20 * va, c21 * va);
                Store(c + 3 * ldc, c30 * va, c31 * va);
                Store(c + 4 * ldc, c40 * va, c41 * va);
                Store(c + 5 * ldc, c50 * va, c51 * va);
                return;
            }
            Vector256<float> vb = Vector256.Create(beta);
            Merge(c + 0 * ldc, c00, c01, va, vb);
            Merge(c + 1 * ldc, c10, c11, va, vb);
            Merge(c + 2 * ldc, c20, c21, va, vb);
            Merge(c + 3 * ldc, c30, c31, va, vb);
            Merge(c + 4 * ldc, c40, c41, va, vb);
            Merge(c + 5 * ldc, c50, c51, va, vb);
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
