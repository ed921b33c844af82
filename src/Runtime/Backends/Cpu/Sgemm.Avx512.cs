using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// 14 x 32 AVX-512 microkernel: 28 zmm accumulators, two zmm of B per depth step and one
    /// broadcast of A, which is 31 of the 32 registers. Each depth step issues 28 FMAs against
    /// 2 vector loads + 14 broadcasts, so it is FMA-bound, not load-bound.
    /// </summary>
    private readonly struct Avx512Kernel : IMicroKernel
    {
        public static int MR => 14;
        public static int NR => 32;
        public static bool UseAvx => true;

        public static void Tile(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
        {
            // The C tile is touched only after the loop; start pulling its 28 lines in now.
            Sse.Prefetch0(c + 0 * ldc); Sse.Prefetch0(c + 0 * ldc + 16);
            Sse.Prefetch0(c + 1 * ldc); Sse.Prefetch0(c + 1 * ldc + 16);
            Sse.Prefetch0(c + 2 * ldc); Sse.Prefetch0(c + 2 * ldc + 16);
            Sse.Prefetch0(c + 3 * ldc); Sse.Prefetch0(c + 3 * ldc + 16);
            Sse.Prefetch0(c + 4 * ldc); Sse.Prefetch0(c + 4 * ldc + 16);
            Sse.Prefetch0(c + 5 * ldc); Sse.Prefetch0(c + 5 * ldc + 16);
            Sse.Prefetch0(c + 6 * ldc); Sse.Prefetch0(c + 6 * ldc + 16);
            Sse.Prefetch0(c + 7 * ldc); Sse.Prefetch0(c + 7 * ldc + 16);
            Sse.Prefetch0(c + 8 * ldc); Sse.Prefetch0(c + 8 * ldc + 16);
            Sse.Prefetch0(c + 9 * ldc); Sse.Prefetch0(c + 9 * ldc + 16);
            Sse.Prefetch0(c + 10 * ldc); Sse.Prefetch0(c + 10 * ldc + 16);
            Sse.Prefetch0(c + 11 * ldc); Sse.Prefetch0(c + 11 * ldc + 16);
            Sse.Prefetch0(c + 12 * ldc); Sse.Prefetch0(c + 12 * ldc + 16);
            Sse.Prefetch0(c + 13 * ldc); Sse.Prefetch0(c + 13 * ldc + 16);

            // c{row}{half}: row of the tile, left / right 16 columns.
            Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default;
            Vector512<float> c20 = default, c21 = default, c30 = default, c31 = default;
            Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default;
            Vector512<float> c60 = default, c61 = default, c70 = default, c71 = default;
            Vector512<float> c80 = default, c81 = default, c90 = default, c91 = default;
            Vector512<float> c100 = default, c101 = default, c110 = default, c111 = default;
            Vector512<float> c120 = default, c121 = default, c130 = default, c131 = default;
            for (int p = 0; p < kc; p++, a++, b += 32)
            {
                Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
                Vector512<float> ai;
                ai = Vector512.Create(a[0 * KC]); c00 = Avx512F.FusedMultiplyAdd(ai, b0, c00); c01 = Avx512F.FusedMultiplyAdd(ai, b1, c01);
                ai = Vector512.Create(a[1 * KC]); c10 = Avx512F.FusedMultiplyAdd(ai, b0, c10); c11 = Avx512F.FusedMultiplyAdd(ai, b1, c11);
                ai = Vector512.Create(a[2 * KC]); c20 = Avx512F.FusedMultiplyAdd(ai, b0, c20); c21 = Avx512F.FusedMultiplyAdd(ai, b1, c21);
                ai = Vector512.Create(a[3 * KC]); c30 = Avx512F.FusedMultiplyAdd(ai, b0, c30); c31 = Avx512F.FusedMultiplyAdd(ai, b1, c31);
                ai = Vector512.Create(a[4 * KC]); c40 = Avx512F.FusedMultiplyAdd(ai, b0, c40); c41 = Avx512F.FusedMultiplyAdd(ai, b1, c41);
                ai = Vector512.Create(a[5 * KC]); c50 = Avx512F.FusedMultiplyAdd(ai, b0, c50); c51 = Avx512F.FusedMultiplyAdd(ai, b1, c51);
                ai = Vector512.Create(a[6 * KC]); c60 = Avx512F.FusedMultiplyAdd(ai, b0, c60); c61 = Avx512F.FusedMultiplyAdd(ai, b1, c61);
                ai = Vector512.Create(a[7 * KC]); c70 = Avx512F.FusedMultiplyAdd(ai, b0, c70); c71 = Avx512F.FusedMultiplyAdd(ai, b1, c71);
                ai = Vector512.Create(a[8 * KC]); c80 = Avx512F.FusedMultiplyAdd(ai, b0, c80); c81 = Avx512F.FusedMultiplyAdd(ai, b1, c81);
                ai = Vector512.Create(a[9 * KC]); c90 = Avx512F.FusedMultiplyAdd(ai, b0, c90); c91 = Avx512F.FusedMultiplyAdd(ai, b1, c91);
                ai = Vector512.Create(a[10 * KC]); c100 = Avx512F.FusedMultiplyAdd(ai, b0, c100); c101 = Avx512F.FusedMultiplyAdd(ai, b1, c101);
                ai = Vector512.Create(a[11 * KC]); c110 = Avx512F.FusedMultiplyAdd(ai, b0, c110); c111 = Avx512F.FusedMultiplyAdd(ai, b1, c111);
                ai = Vector512.Create(a[12 * KC]); c120 = Avx512F.FusedMultiplyAdd(ai, b0, c120); c121 = Avx512F.FusedMultiplyAdd(ai, b1, c121);
                ai = Vector512.Create(a[13 * KC]); c130 = Avx512F.FusedMultiplyAdd(ai, b0, c130); c131 = Avx512F.FusedMultiplyAdd(ai, b1, c131);
            }

            Vector512<float> va = Vector512.Create(alpha);
            if (beta == 0f)
            {
                Store(c + 0 * ldc, c00 * va, c01 * va);
                Store(c + 1 * ldc, c10 * va, c11 * va);
                Store(c + 2 * ldc, c20 * va, c21 * va);
                Store(c + 3 * ldc, c30 * va, c31 * va);
                Store(c + 4 * ldc, c40 * va, c41 * va);
                Store(c + 5 * ldc, c50 * va, c51 * va);
                Store(c + 6 * ldc, c60 * va, c61 * va);
                Store(c + 7 * ldc, c70 * va, c71 * va);
                Store(c + 8 * ldc, c80 * va, c81 * va);
                Store(c + 9 * ldc, c90 * va, c91 * va);
                Store(c + 10 * ldc, c100 * va, c101 * va);
                Store(c + 11 * ldc, c110 * va, c111 * va);
                Store(c + 12 * ldc, c120 * va, c121 * va);
                Store(c + 13 * ldc, c130 * va, c131 * va);
                return;
            }
            Vector512<float> vb = Vector512.Create(beta);
            Merge(c + 0 * ldc, c00, c01, va, vb);
            Merge(c + 1 * ldc, c10, c11, va, vb);
            Merge(c + 2 * ldc, c20, c21, va, vb);
            Merge(c + 3 * ldc, c30, c31, va, vb);
            Merge(c + 4 * ldc, c40, c41, va, vb);
            Merge(c + 5 * ldc, c50, c51, va, vb);
            Merge(c + 6 * ldc, c60, c61, va, vb);
            Merge(c + 7 * ldc, c70, c71, va, vb);
            Merge(c + 8 * ldc, c80, c81, va, vb);
            Merge(c + 9 * ldc, c90, c91, va, vb);
            Merge(c + 10 * ldc, c100, c101, va, vb);
            Merge(c + 11 * ldc, c110, c111, va, vb);
            Merge(c + 12 * ldc, c120, c121, va, vb);
            Merge(c + 13 * ldc, c130, c131, va, vb);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Store(float* c, Vector512<float> v0, Vector512<float> v1)
        {
            Vector512.Store(v0, c);
            Vector512.Store(v1, c + 16);
        }

        /// <summary>c[0..32] = alpha * acc + beta * c.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Merge(float* c, Vector512<float> acc0, Vector512<float> acc1, Vector512<float> alpha, Vector512<float> beta)
        {
            Vector512.Store(Avx512F.FusedMultiplyAdd(acc0, alpha, Vector512.Load(c) * beta), c);
            Vector512.Store(Avx512F.FusedMultiplyAdd(acc1, alpha, Vector512.Load(c + 16) * beta), c + 16);
        }
    }
}
