using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// A register-blocked microkernel. Implemented by structs so the blocked loops and packers,
    /// written once as generics, are specialised per kernel with MR and NR as JIT-time constants.
    /// </summary>
    internal interface IMicroKernel
    {
        /// <summary>Rows of C per microkernel call.</summary>
        static abstract int MR { get; }

        /// <summary>Columns of C per microkernel call.</summary>
        static abstract int NR { get; }

        /// <summary>Whether the packers may use the AVX 8x8 transpose (the portable path must not).</summary>
        static abstract bool UseAvx { get; }

        /// <summary>
        /// acc[MR, NR] = Ã · B̃ over <paramref name="kc"/> steps, then c[i*ldc + j] = alpha * acc + beta * c
        /// for the full MR x NR tile; beta == 0 must not read c.
        /// <paramref name="a"/> is one packed A micro-panel [MR, KC] (row stride KC),
        /// <paramref name="b"/> one packed B micro-panel [kc, NR].
        /// </summary>
        static abstract void Tile(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta);
    }

    /// <summary>
    /// Packs op(A)[ic..ic+mc, pc..pc+kc] into ceil(mc/MR) micro-panels of [MR, KC] (row stride KC,
    /// only the first kc columns written). Rows past mc are zero so edge tiles need no special kernel.
    /// </summary>
    private static void PackA<TKernel>(in Problem p, int ic, int mc, int pc, int kc, float* dst) where TKernel : struct, IMicroKernel
    {
        int mr = TKernel.MR;
        for (int ir = 0; ir < mc; ir += mr, dst += mr * KC)
        {
            int rows = Math.Min(mr, mc - ir);
            float* src = p.A + (ic + ir) * p.RsA + pc * p.CsA;
            if (p.CsA == 1)
            {
                // op(A) rows are contiguous (A not transposed): a straight copy per row.
                for (int r = 0; r < rows; r++)
                    new ReadOnlySpan<float>(src + r * p.RsA, kc).CopyTo(new Span<float>(dst + r * KC, kc));
            }
            else
            {
                // A stored [k, m]: the panel's rows are columns of memory; transpose [kc, rows] -> [rows, kc].
                Debug.Assert(p.RsA == 1);
                Transpose(src, p.CsA, kc, rows, dst, KC, TKernel.UseAvx);
            }
            for (int r = rows; r < mr; r++)
                new Span<float>(dst + r * KC, kc).Clear();
        }
    }

    /// <summary>
    /// Packs op(B)[pc..pc+kc, jc..jc+nc] into ceil(nc/NR) micro-panels of [kc, NR], each contiguous.
    /// Columns past nc are zero.
    /// </summary>
    private static void PackB<TKernel>(in Problem p, int pc, int kc, int jc, int nc, float* dst) where TKernel : struct, IMicroKernel
    {
        int nr = TKernel.NR;
        for (int jr = 0; jr < nc; jr += nr, dst += kc * nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* src = p.B + pc * p.RsB + (jc + jr) * p.CsB;
            if (p.CsB != 1)
            {
                // B stored [n, k]: transpose [cols, kc] -> [kc, cols] with row stride NR.
                Debug.Assert(p.RsB == 1);
                Transpose(src, p.CsB, cols, kc, dst, nr, TKernel.UseAvx);
            }
            else if (cols == nr)
            {
                // op(B) rows are contiguous (B not transposed): NR floats per depth step, a
                // constant-size copy the JIT unrolls into a few vector moves.
                for (int k = 0; k < kc; k++)
                    Unsafe.CopyBlockUnaligned(dst + k * nr, src + k * p.RsB, (uint)(nr * sizeof(float)));
            }
            else
            {
                for (int k = 0; k < kc; k++)
                    new ReadOnlySpan<float>(src + k * p.RsB, cols).CopyTo(new Span<float>(dst + k * nr, cols));
            }
            if (cols < nr)
                for (int k = 0; k < kc; k++)
                    new Span<float>(dst + k * nr + cols, nr - cols).Clear();
        }
    }

    /// <summary>
    /// <see cref="PackA{TKernel}"/> for a plain row-major A [*, lda] (op(A) = A): rows [i0, i0+rows), depth [pc, pc+kc).
    /// For kernels that run the microkernel themselves between other work (<see cref="Kernels.LinearCrossEntropyKernel"/>).
    /// </summary>
    internal static void PackRowMajorA<TKernel>(float* a, int lda, int i0, int rows, int pc, int kc, float* dst) where TKernel : struct, IMicroKernel
        => PackA<TKernel>(new Problem { A = a, RsA = lda, CsA = 1 }, i0, rows, pc, kc, dst);

    /// <summary>
    /// <see cref="PackB{TKernel}"/> for a row-major B: op(B) = B [k, n] or, when <paramref name="transB"/>, Bᵀ with B stored [n, k];
    /// depth [pc, pc+kc), columns [jc, jc+nc).
    /// </summary>
    internal static void PackRowMajorB<TKernel>(float* b, int ldb, bool transB, int pc, int kc, int jc, int nc, float* dst) where TKernel : struct, IMicroKernel
        => PackB<TKernel>(new Problem { B = b, RsB = transB ? 1 : ldb, CsB = transB ? ldb : 1 }, pc, kc, jc, nc, dst);

    /// <summary>dst[j * dstStride + i] = src[i * srcStride + j] for i &lt; rows, j &lt; cols.</summary>
    private static void Transpose(float* src, nint srcStride, int rows, int cols, float* dst, nint dstStride, bool useAvx)
    {
        if (!useAvx || rows < 8 || cols < 8)
        {
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                    dst[j * dstStride + i] = src[i * srcStride + j];
            return;
        }
        // Cover the block with 8x8 tiles; the last tile in each direction is pulled back to end
        // exactly at the edge, rewriting a few elements with the same values instead of a scalar tail.
        for (int i = 0; ; i += 8)
        {
            i = Math.Min(i, rows - 8);
            for (int j = 0; ; j += 8)
            {
                j = Math.Min(j, cols - 8);
                Transpose8x8(src + i * srcStride + j, srcStride, dst + j * dstStride + i, dstStride);
                if (j == cols - 8) break;
            }
            if (i == rows - 8) break;
        }
    }

    /// <summary>Transposes one 8x8 block with the classic unpack / shuffle / lane-permute network.</summary>
    internal static void Transpose8x8(float* src, nint srcStride, float* dst, nint dstStride)
    {
        Vector256<float> r0 = Avx.LoadVector256(src);
        Vector256<float> r1 = Avx.LoadVector256(src + srcStride);
        Vector256<float> r2 = Avx.LoadVector256(src + 2 * srcStride);
        Vector256<float> r3 = Avx.LoadVector256(src + 3 * srcStride);
        Vector256<float> r4 = Avx.LoadVector256(src + 4 * srcStride);
        Vector256<float> r5 = Avx.LoadVector256(src + 5 * srcStride);
        Vector256<float> r6 = Avx.LoadVector256(src + 6 * srcStride);
        Vector256<float> r7 = Avx.LoadVector256(src + 7 * srcStride);

        // Interleave row pairs: t0 = a0 b0 a1 b1 | a4 b4 a5 b5, t1 = a2 b2 a3 b3 | a6 b6 a7 b7, ...
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5);
        Vector256<float> t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);

        // Gather four rows per column within each 128-bit lane: s0 = a0 b0 c0 d0 | a4 b4 c4 d4, ...
        Vector256<float> s0 = Avx.Shuffle(t0, t2, 0x44), s1 = Avx.Shuffle(t0, t2, 0xEE);
        Vector256<float> s2 = Avx.Shuffle(t1, t3, 0x44), s3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> s4 = Avx.Shuffle(t4, t6, 0x44), s5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> s6 = Avx.Shuffle(t5, t7, 0x44), s7 = Avx.Shuffle(t5, t7, 0xEE);

        // Join the lanes of the top and bottom four rows: column j of the block.
        Avx.Store(dst, Avx.Permute2x128(s0, s4, 0x20));
        Avx.Store(dst + dstStride, Avx.Permute2x128(s1, s5, 0x20));
        Avx.Store(dst + 2 * dstStride, Avx.Permute2x128(s2, s6, 0x20));
        Avx.Store(dst + 3 * dstStride, Avx.Permute2x128(s3, s7, 0x20));
        Avx.Store(dst + 4 * dstStride, Avx.Permute2x128(s0, s4, 0x31));
        Avx.Store(dst + 5 * dstStride, Avx.Permute2x128(s1, s5, 0x31));
        Avx.Store(dst + 6 * dstStride, Avx.Permute2x128(s2, s6, 0x31));
        Avx.Store(dst + 7 * dstStride, Avx.Permute2x128(s3, s7, 0x31));
    }

    /// <summary>
    /// Pack buffers for one thread's share of a call. Pooled rather than [ThreadStatic] so that
    /// memory scales with how many threads run SGEMM at once, not with how many pool threads
    /// ever touched it. Backed by pinned managed arrays: the GC frees a dropped one, no finalizer.
    /// </summary>
    internal sealed class Workspace
    {
        private const int Alignment = 64;
        private const int MaxPooled = 16;
        private static readonly Stack<Workspace> s_pool = new();

        private float[] _aStore = [];
        private float[] _bStore = [];

        /// <summary>Packed A block, 64-byte aligned.</summary>
        public float* A { get; private set; }

        /// <summary>Packed B block, 64-byte aligned.</summary>
        public float* B { get; private set; }

        public static Workspace Rent()
        {
            lock (s_pool)
                if (s_pool.TryPop(out var ws)) return ws;
            return new Workspace();
        }

        public static void Return(Workspace ws)
        {
            lock (s_pool)
                if (s_pool.Count < MaxPooled) s_pool.Push(ws);
        }

        /// <summary>Grows (never shrinks) the buffers to hold at least the given float counts.</summary>
        public void Reserve(int aFloats, int bFloats)
        {
            if (_aStore.Length < aFloats + Alignment / sizeof(float))
                A = AllocateAligned(aFloats, out _aStore);
            if (_bStore.Length < bFloats + Alignment / sizeof(float))
                B = AllocateAligned(bFloats, out _bStore);
        }

        private static float* AllocateAligned(int floats, out float[] store)
        {
            // Pinned-heap arrays never move, so a raw pointer into one stays valid while it is referenced.
            store = GC.AllocateUninitializedArray<float>(floats + Alignment / sizeof(float), pinned: true);
            nint start = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(store));
            return (float*)((start + Alignment - 1) & ~(nint)(Alignment - 1));
        }
    }
}
