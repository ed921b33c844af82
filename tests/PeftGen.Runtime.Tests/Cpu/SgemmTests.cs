using PeftGen.Backends.Cpu;
using Xunit;

namespace PeftGen.Tests.Cpu;

/// <summary>
/// Sgemm against a naive double-precision reference, on every kernel this CPU supports, all four
/// transpose combinations, odd sizes, padded leading dimensions and the alpha/beta special cases.
/// </summary>
public unsafe class SgemmTests
{
    // (m, n, k): tiny, odd, around the 14/6/4-row and 32/16-column tile edges, k past one
    // 384-deep block (k = 520 splits into three), m past one MC block (400 rows at k = 256),
    // n past one NC block (4200), skinny LoRA-like shapes that take the transposed orientation
    // (n = 8) and ones big enough to be split across threads (200 x 300 x 100 = 12 MFLOP).
    private static readonly (int M, int N, int K)[] s_shapes =
    [
        (1, 1, 1), (1, 17, 3), (3, 1, 17), (3, 5, 7), (17, 63, 65), (63, 65, 129), (65, 33, 257),
        (29, 17, 520), (15, 31, 1), (400, 40, 256), (3, 4200, 5), (200, 8, 40), (8, 120, 64),
        (200, 300, 100), (257, 129, 63),
    ];

    // (alpha, beta) cycled over the shapes; beta == 0 runs on a NaN-filled C.
    private static readonly (float Alpha, float Beta)[] s_scales = [(1f, 0f), (0.5f, -1.5f), (1f, 1f), (-2f, 0f), (1.25f, 0.5f)];

    // Kernels travel as names: SgemmKernel is internal, and public test methods cannot take it.
    public static TheoryData<string, bool, bool> KernelsAndTransposes()
    {
        var data = new TheoryData<string, bool, bool>();
        foreach (var kernel in SupportedKernels())
            foreach (bool transA in new[] { false, true })
                foreach (bool transB in new[] { false, true })
                    data.Add(kernel.ToString(), transA, transB);
        return data;
    }

    public static TheoryData<string> Kernels()
    {
        var data = new TheoryData<string>();
        foreach (var kernel in SupportedKernels())
            data.Add(kernel.ToString());
        return data;
    }

    private static IEnumerable<SgemmKernel> SupportedKernels() => Enum.GetValues<SgemmKernel>().Where(Sgemm.IsSupported);

    [Theory]
    [MemberData(nameof(KernelsAndTransposes))]
    public void MatchesReferenceAcrossShapes(string kernelName, bool transA, bool transB)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        for (int s = 0; s < s_shapes.Length; s++)
        {
            var (m, n, k) = s_shapes[s];
            var (alpha, beta) = s_scales[s % s_scales.Length];
            // Every other shape gets leading dimensions larger than the minimum.
            int pad = s % 2 == 0 ? 0 : 3 + s;
            Check(kernel, transA, transB, m, n, k, alpha, beta, pad, seed: s);
        }
    }

    /// <summary>
    /// Shapes for the skinny paths (Sgemm.Skinny.cs), the tiny dimension d swept over 1..33 so
    /// each path is seen around its register blocks (3, 4, 6, 8 rows; 4, 8 columns; 16, 32, 48
    /// column strips) and past its thresholds (32 for m, n and k), with the other sizes odd.
    /// Across the four transpose combinations every shape reaches its path in both orientations.
    /// </summary>
    private static IEnumerable<(int M, int N, int K)> SkinnyShapes()
    {
        // Widths the rank-k path takes on every kernel: whole 48- and 16-column strips, or a
        // partial last strip that pads by less than an eighth (300, 380).
        int[] depthWidths = [96, 144, 300, 380, 192];
        for (int d = 1; d <= 33; d++)
        {
            yield return (4 * d + 7 + d % 5, d, 37 + 3 * d);   // small n: dot products, k with a partial last vector
            yield return (d, 4 * d + 11 + d % 7, 41 + 2 * d);  // small m: outer products
            yield return (53 + d, depthWidths[d % depthWidths.Length], d); // small k: rank-d update
        }
        // Near misses that the blocked path keeps: k below one vector for the dot products,
        // n too narrow (or too ragged) for the rank-k strips, both sides small, and GEMV.
        yield return (100, 4, 9);
        yield return (2, 300, 5);
        yield return (200, 100, 16);
        yield return (40, 40, 600);
        yield return (1, 700, 300);
        yield return (700, 1, 300);
        // Deep enough for several depth blocks of the small-m path, and narrow enough that it
        // splits the depth into chunks.
        yield return (8, 40, 1500);
        yield return (13, 130, 700);
    }

    [Theory]
    [MemberData(nameof(KernelsAndTransposes))]
    public void SkinnyShapesMatchReference(string kernelName, bool transA, bool transB)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        int s = 0;
        foreach (var (m, n, k) in SkinnyShapes())
        {
            // Scales cycle with a stride coprime to the three shape kinds, so each path sees every
            // (alpha, beta) case: beta == 0 on a NaN-filled C, alpha == 1 with beta 0 and 1 (the
            // store-only and add-to finishes), and general ones.
            var (alpha, beta) = s_scales[s * 2 % s_scales.Length];
            int pad = s % 3 == 0 ? 0 : 1 + s % 7;
            Check(kernel, transA, transB, m, n, k, alpha, beta, pad, seed: 1000 + s);
            s++;
        }
    }

    [Theory]
    [MemberData(nameof(KernelsAndTransposes))]
    public void LoraShapesMatchReference(string kernelName, bool transA, bool transB)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        // The six GEMMs of a LoRA layer (rows tokens, in -> out, rank r) at sizes that split
        // across threads, each run in the transpose combination under test.
        const int rows = 600, inF = 288, outF = 200;
        foreach (int r in new[] { 8, 16 })
        {
            Check(kernel, transA, transB, rows, r, inF, 1f, 0f, pad: 0, seed: r);      // h = x · Aᵀ
            Check(kernel, transA, transB, rows, outF, r, 1f, 1f, pad: 0, seed: r + 1); // y += h · Bᵀ
            Check(kernel, transA, transB, outF, r, rows, 1f, 0f, pad: 0, seed: r + 2); // dB = gᵀ · h
            Check(kernel, transA, transB, rows, r, outF, 1f, 0f, pad: 3, seed: r + 3); // dh = g · B
            Check(kernel, transA, transB, r, inF, rows, 1f, 0f, pad: 0, seed: r + 4);  // dA = dhᵀ · x
            Check(kernel, transA, transB, rows, inF, r, 1f, 1f, pad: 5, seed: r + 5);  // dx += dh · A
        }
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void SkinnyBatchedMatchesPerProblemReference(string kernelName)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        // dA = Σ over sequences of dhᵀ · x into one C (strideC == 0, in order), and
        // h = x · Aᵀ per sequence with a shared A (several small problems, one thread each).
        const int seqRows = 70, inF = 100, r = 8, batch = 4;
        var rng = new Random(11);
        var dh = Random(rng, batch * seqRows * r);
        var x = Random(rng, batch * seqRows * inF);
        var dA = Filled(r * inF, float.NaN);
        var expected = new float[r * inF];
        for (int i = 0; i < batch; i++)
            Reference(true, false, r, inF, seqRows, 1f, dh, i * seqRows * r, r, x, i * seqRows * inF, inF, 1f, expected, 0, inF);
        var a = Random(rng, r * inF);
        var h = Filled(batch * seqRows * r, float.NaN);
        var expectedH = new float[h.Length];
        for (int i = 0; i < batch; i++)
            Reference(false, true, seqRows, r, inF, 1f, x, i * seqRows * inF, inF, a, 0, inF, 0f, expectedH, i * seqRows * r, r);
        fixed (float* pdh = dh, px = x, pdA = dA, pa = a, ph = h)
        {
            Sgemm.Multiply(kernel, true, false, r, inF, seqRows, 1f, pdh, r, px, inF, 0f, pdA, inF);
            Sgemm.MultiplyBatched(kernel, true, false, r, inF, seqRows, 1f, pdh + seqRows * r, r, seqRows * r,
                px + seqRows * inF, inF, seqRows * inF, 1f, pdA, inF, 0, batch - 1);
            Sgemm.MultiplyBatched(kernel, false, true, seqRows, r, inF, 1f, px, inF, seqRows * inF, pa, inF, 0,
                0f, ph, r, seqRows * r, batch);
        }
        AssertClose(expected, dA, seqRows * batch, $"{kernel} batched dA");
        AssertClose(expectedH, h, inF, $"{kernel} batched h");
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void BetaZeroDoesNotReadNaNInC(string kernelName)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        // Full tiles (direct kernel store) and edge tiles (merge path) both.
        Check(kernel, false, true, 28, 64, 40, 1f, 0f, pad: 0, seed: 1);
        Check(kernel, true, false, 29, 65, 40, 1f, 0f, pad: 5, seed: 2);
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void ZeroDepthScalesC(string kernelName)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        const int m = 5, n = 7, ldc = 9;
        var c = Filled(m * ldc, 3f);
        fixed (float* pc = c)
            Sgemm.Multiply(kernel, false, false, m, n, 0, 1f, null, 1, null, n, 0.5f, pc, ldc);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < ldc; j++)
                Assert.Equal(j < n ? 1.5f : 3f, c[i * ldc + j]);

        var nan = Filled(m * ldc, float.NaN);
        fixed (float* pc = nan)
            Sgemm.Multiply(kernel, false, false, m, n, 0, 1f, null, 1, null, n, 0f, pc, ldc);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                Assert.Equal(0f, nan[i * ldc + j]);
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void ZeroAlphaIgnoresAAndB(string kernelName)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        const int m = 4, n = 6, k = 3;
        var a = Filled(m * k, float.NaN);
        var b = Filled(k * n, float.PositiveInfinity);
        var c = Filled(m * n, 2f);
        fixed (float* pa = a, pb = b, pc = c)
            Sgemm.Multiply(kernel, false, false, m, n, k, 0f, pa, k, pb, n, 3f, pc, n);
        Assert.All(c, v => Assert.Equal(6f, v));
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void BatchedMatchesPerProblemReference(string kernelName)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        // Shared A (stride 0), per-problem B and C; 5 small problems take the one-thread-per-problem path,
        // 2 larger ones (17 MFLOP each) the split-each-problem path.
        foreach (var (m, n, k, batch) in new[] { (9, 20, 11, 5), (210, 200, 200, 2) })
        {
            var rng = new Random(m);
            int lda = k + 2, ldb = k + 1, ldc = n + 3; // A [m, k], B stored [n, k] (transB)
            long strideB = (long)n * ldb + 5, strideC = (long)m * ldc + 7;
            var a = Random(rng, m * lda);
            var b = Random(rng, (int)(strideB * batch));
            var c = Random(rng, (int)(strideC * batch));
            var expected = (float[])c.Clone();
            for (int i = 0; i < batch; i++)
                Reference(false, true, m, n, k, 0.75f, a, 0, lda, b, (int)(i * strideB), ldb, 0.25f, expected, (int)(i * strideC), ldc);
            fixed (float* pa = a, pb = b, pc = c)
                Sgemm.MultiplyBatched(kernel, false, true, m, n, k, 0.75f, pa, lda, 0, pb, ldb, strideB, 0.25f, pc, ldc, strideC, batch);
            AssertClose(expected, c, k, $"batched {kernel} {m}x{n}x{k} x{batch}");
        }
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void BatchedWithSharedCAccumulatesInOrder(string kernelName)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        // dW = sum over the batch of dyᵀ · x, the way a weight gradient sums over sequences.
        const int m = 12, n = 40, k = 33, batch = 3;
        var rng = new Random(7);
        var a = Random(rng, k * m * batch); // [batch][k, m], transposed A
        var b = Random(rng, k * n * batch); // [batch][k, n]
        var c = Filled(m * n, float.NaN);
        var expected = new float[m * n];
        for (int i = 0; i < batch; i++)
            Reference(true, false, m, n, k, 1f, a, i * k * m, m, b, i * k * n, n, 1f, expected, 0, n);
        fixed (float* pa = a, pb = b, pc = c)
        {
            // The first problem overwrites (beta = 0 clears the NaNs), then the rest accumulate.
            Sgemm.Multiply(kernel, true, false, m, n, k, 1f, pa, m, pb, n, 0f, pc, n);
            Sgemm.MultiplyBatched(kernel, true, false, m, n, k, 1f, pa + k * m, m, k * m, pb + k * n, n, k * n, 1f, pc, n, 0, batch - 1);
        }
        AssertClose(expected, c, k * batch, $"shared-C batched {kernel}");
    }

    [Fact]
    public void RejectsTooSmallLeadingDimension()
    {
        var buffer = new float[64];
        fixed (float* p = buffer)
        {
            float* q = p;
            Assert.Throws<ArgumentOutOfRangeException>(() => Sgemm.Multiply(false, false, 4, 4, 4, 1f, q, 3, q, 4, 0f, q, 4));
            Assert.Throws<ArgumentOutOfRangeException>(() => Sgemm.Multiply(true, false, 5, 4, 4, 1f, q, 4, q, 4, 0f, q, 4));
            Assert.Throws<ArgumentOutOfRangeException>(() => Sgemm.Multiply(false, true, 4, 4, 5, 1f, q, 5, q, 4, 0f, q, 4));
            Assert.Throws<ArgumentOutOfRangeException>(() => Sgemm.Multiply(false, false, 4, 4, 4, 1f, q, 4, q, 4, 0f, q, 3));
        }
    }

    /// <summary>
    /// Runs one multiply with leading dimensions <paramref name="pad"/> past the minimum and checks
    /// it against the reference, including that C's padding columns were left alone.
    /// </summary>
    private static void Check(SgemmKernel kernel, bool transA, bool transB, int m, int n, int k,
        float alpha, float beta, int pad, int seed)
    {
        var rng = new Random(seed * 7919 + m * 31 + n * 17 + k);
        int lda = (transA ? m : k) + pad, ldb = (transB ? k : n) + pad, ldc = n + pad;
        var a = Random(rng, (transA ? k : m) * lda);
        var b = Random(rng, (transB ? n : k) * ldb);
        var c = beta == 0f ? Filled(m * ldc, float.NaN) : Random(rng, m * ldc);
        var expected = (float[])c.Clone();
        Reference(transA, transB, m, n, k, alpha, a, 0, lda, b, 0, ldb, beta, expected, 0, ldc);

        fixed (float* pa = a, pb = b, pc = c)
            Sgemm.Multiply(kernel, transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);

        AssertClose(expected, c, k, $"{kernel} {(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')} m={m} n={n} k={k} alpha={alpha} beta={beta} pad={pad}");
    }

    /// <summary>C = alpha * op(A) · op(B) + beta * C in double precision; beta == 0 ignores C. Padding columns are untouched.</summary>
    internal static void Reference(bool transA, bool transB, int m, int n, int k, float alpha,
        float[] a, int aOffset, int lda, float[] b, int bOffset, int ldb, float beta, float[] c, int cOffset, int ldc)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                for (int p = 0; p < k; p++)
                {
                    double av = a[aOffset + (transA ? p * lda + i : i * lda + p)];
                    double bv = b[bOffset + (transB ? j * ldb + p : p * ldb + j)];
                    sum += av * bv;
                }
                ref float cij = ref c[cOffset + i * ldc + j];
                cij = (float)(alpha * sum + (beta == 0f ? 0.0 : beta * (double)cij));
            }
    }

    /// <summary>
    /// Element-wise comparison with a tolerance that grows with the depth of the sums; NaNs in the
    /// expected array (untouched padding) must be NaN in the actual one too.
    /// </summary>
    internal static void AssertClose(float[] expected, float[] actual, int depth, string what)
    {
        double tolerance = 2e-6 * (depth + 4);
        double worst = 0;
        int worstIndex = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsNaN(expected[i]))
            {
                Assert.True(float.IsNaN(actual[i]), $"{what}: padding element {i} was overwritten with {actual[i]}");
                continue;
            }
            double error = Math.Abs((double)expected[i] - actual[i]) / Math.Max(1.0, Math.Abs(expected[i]));
            if (!(error <= worst)) // also catches NaN in actual
            {
                worst = double.IsNaN(error) ? double.PositiveInfinity : error;
                worstIndex = i;
            }
        }
        Assert.True(worst <= tolerance,
            $"{what}: largest error {worst:E3} at element {worstIndex} (expected {(worstIndex >= 0 ? expected[worstIndex] : 0)}, got {(worstIndex >= 0 ? actual[worstIndex] : 0)}), tolerance {tolerance:E3}");
    }

    internal static float[] Random(Random rng, int count)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        return values;
    }

    internal static float[] Filled(int count, float value)
    {
        var values = new float[count];
        Array.Fill(values, value);
        return values;
    }
}

/// <summary>
/// The skinny paths split work by rows, by columns or by depth chunks fixed by the shape, never by
/// the thread count, so their results are bit-identical on any number of threads.
/// </summary>
[Collection("CpuThreads")]
public unsafe class SgemmThreadCountTests
{
    // One shape per way of splitting, each big enough to fan out: rows of dot products (with a
    // packed op(B) when it is not already [n, k]), columns of outer products (directly, and as a
    // transposed problem writing a strided C), depth chunks of a narrow C, rows of a rank-k update.
    private static readonly (int M, int N, int K, bool TransA, bool TransB, float Beta)[] s_shapes =
    [
        (2050, 8, 300, false, true, 0f),
        (2049, 16, 300, false, false, 0f),
        (8, 600, 2048, true, false, 0f),
        (600, 8, 2048, true, false, 1f),
        (8, 40, 4096, true, false, 0f),
        (1500, 300, 8, false, false, 1f),
    ];

    [Fact]
    public void SkinnyPathsAreIndependentOfThreadCount()
    {
        int saved = CpuParallel.MaxThreads;
        try
        {
            foreach (var kernel in Enum.GetValues<SgemmKernel>().Where(Sgemm.IsSupported))
                foreach (var (m, n, k, transA, transB, beta) in s_shapes)
                {
                    var rng = new Random(m + n + k);
                    int lda = transA ? m : k, ldb = transB ? k : n;
                    var a = SgemmTests.Random(rng, m * k);
                    var b = SgemmTests.Random(rng, k * n);
                    var c0 = SgemmTests.Random(rng, m * n);
                    var expected = (float[])c0.Clone();
                    SgemmTests.Reference(transA, transB, m, n, k, 1f, a, 0, lda, b, 0, ldb, beta, expected, 0, n);
                    float[]? first = null;
                    foreach (int threads in new[] { 1, 2, 3 })
                    {
                        CpuParallel.MaxThreads = threads;
                        var c = (float[])c0.Clone();
                        fixed (float* pa = a, pb = b, pc = c)
                            Sgemm.Multiply(kernel, transA, transB, m, n, k, 1f, pa, lda, pb, ldb, beta, pc, n);
                        string what = $"{kernel} {(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')} m={m} n={n} k={k} on {threads} threads";
                        SgemmTests.AssertClose(expected, c, k, what);
                        first ??= c;
                        int differing = c.Where((x, i) => BitConverter.SingleToInt32Bits(x) != BitConverter.SingleToInt32Bits(first[i])).Count();
                        Assert.True(differing == 0, $"{what}: {differing} of {c.Length} values differ from the one-thread result");
                    }
                }
        }
        finally
        {
            CpuParallel.MaxThreads = saved;
        }
    }
}
