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
    internal readonly struct Avx512Kernel : IMicroKernel
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

            // c{row}l / c{row}r: left / right 16 columns of one tile row.
            Vector512<float> c0l = default, c0r = default, c1l = default, c1r = default;
            Vector512<float> c2l = default, c2r = default, c3l = default, c3r = default;
            Vector512<float> c4l = default, c4r = default, c5l = default, c5r = default;
            Vector512<float> c6l = default, c6r = default, c7l = default, c7r = default;
            Vector512<float> c8l = default, c8r = default, c9l = default, c9r = default;
            Vector512<float> c10l = default, c10r = default, c11l = default, c11r = default;
            Vector512<float> c12l = default, c12r = default, c13l = default, c13r = default;
            // Depth step p: rank-1 update with row p of B̃ (at b) and column p of Ã, whose
            // element for tile row r sits at a[r * KC] (a advances one column per step).
            for (int p = 0; p < kc; p++, a++, b += 32)
            {
                Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
                Vector512<float> ai;
                ai = Vector512.Create(a[0 * KC]); c0l = Avx512F.FusedMultiplyAdd(ai, b0, c0l); c0r = Avx512F.FusedMultiplyAdd(ai, b1, c0r);
                ai = Vector512.Create(a[1 * KC]); c1l = Avx512F.FusedMultiplyAdd(ai, b0, c1l); c1r = Avx512F.FusedMultiplyAdd(ai, b1, c1r);
                ai = Vector512.Create(a[2 * KC]); c2l = Avx512F.FusedMultiplyAdd(ai, b0, c2l); c2r = Avx512F.FusedMultiplyAdd(ai, b1, c2r);
                ai = Vector512.Create(a[3 * KC]); c3l = Avx512F.FusedMultiplyAdd(ai, b0, c3l); c3r = Avx512F.FusedMultiplyAdd(ai, b1, c3r);
                ai = Vector512.Create(a[4 * KC]); c4l = Avx512F.FusedMultiplyAdd(ai, b0, c4l); c4r = Avx512F.FusedMultiplyAdd(ai, b1, c4r);
                ai = Vector512.Create(a[5 * KC]); c5l = Avx512F.FusedMultiplyAdd(ai, b0, c5l); c5r = Avx512F.FusedMultiplyAdd(ai, b1, c5r);
                ai = Vector512.Create(a[6 * KC]); c6l = Avx512F.FusedMultiplyAdd(ai, b0, c6l); c6r = Avx512F.FusedMultiplyAdd(ai, b1, c6r);
                ai = Vector512.Create(a[7 * KC]); c7l = Avx512F.FusedMultiplyAdd(ai, b0, c7l); c7r = Avx512F.FusedMultiplyAdd(ai, b1, c7r);
                ai = Vector512.Create(a[8 * KC]); c8l = Avx512F.FusedMultiplyAdd(ai, b0, c8l); c8r = Avx512F.FusedMultiplyAdd(ai, b1, c8r);
                ai = Vector512.Create(a[9 * KC]); c9l = Avx512F.FusedMultiplyAdd(ai, b0, c9l); c9r = Avx512F.FusedMultiplyAdd(ai, b1, c9r);
                ai = Vector512.Create(a[10 * KC]); c10l = Avx512F.FusedMultiplyAdd(ai, b0, c10l); c10r = Avx512F.FusedMultiplyAdd(ai, b1, c10r);
                ai = Vector512.Create(a[11 * KC]); c11l = Avx512F.FusedMultiplyAdd(ai, b0, c11l); c11r = Avx512F.FusedMultiplyAdd(ai, b1, c11r);
                ai = Vector512.Create(a[12 * KC]); c12l = Avx512F.FusedMultiplyAdd(ai, b0, c12l); c12r = Avx512F.FusedMultiplyAdd(ai, b1, c12r);
                ai = Vector512.Create(a[13 * KC]); c13l = Avx512F.FusedMultiplyAdd(ai, b0, c13l); c13r = Avx512F.FusedMultiplyAdd(ai, b1, c13r);
            }

            Vector512<float> va = Vector512.Create(alpha);
            if (beta == 0f)
            {
                Store(c + 0 * ldc, c0l * va, c0r * va);
                Store(c + 1 * ldc, c1l * va, c1r * va);
                Store(c + 2 * ldc, c2l * va, c2r * va);
                Store(c + 3 * ldc, c3l * va, c3r * va);
                Store(c + 4 * ldc, c4l * va, c4r * va);
                Store(c + 5 * ldc, c5l * va, c5r * va);
                Store(c + 6 * ldc, c6l * va, c6r * va);
                Store(c + 7 * ldc, c7l * va, c7r * va);
                Store(c + 8 * ldc, c8l * va, c8r * va);
                Store(c + 9 * ldc, c9l * va, c9r * va);
                Store(c + 10 * ldc, c10l * va, c10r * va);
                Store(c + 11 * ldc, c11l * va, c11r * va);
                Store(c + 12 * ldc, c12l * va, c12r * va);
                Store(c + 13 * ldc, c13l * va, c13r * va);
                return;
            }
            Vector512<float> vb = Vector512.Create(beta);
            Merge(c + 0 * ldc, c0l, c0r, va, vb);
            Merge(c + 1 * ldc, c1l, c1r, va, vb);
            Merge(c + 2 * ldc, c2l, c2r, va, vb);
            Merge(c + 3 * ldc, c3l, c3r, va, vb);
            Merge(c + 4 * ldc, c4l, c4r, va, vb);
            Merge(c + 5 * ldc, c5l, c5r, va, vb);
            Merge(c + 6 * ldc, c6l, c6r, va, vb);
            Merge(c + 7 * ldc, c7l, c7r, va, vb);
            Merge(c + 8 * ldc, c8l, c8r, va, vb);
            Merge(c + 9 * ldc, c9l, c9r, va, vb);
            Merge(c + 10 * ldc, c10l, c10r, va, vb);
            Merge(c + 11 * ldc, c11l, c11r, va, vb);
            Merge(c + 12 * ldc, c12l, c12r, va, vb);
            Merge(c + 13 * ldc, c13l, c13r, va, vb);
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
