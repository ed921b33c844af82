using PeftGen.Backends.Cpu.Kernels;
using Xunit;

namespace PeftGen.Tests.Cpu;

public unsafe class AttentionKernelTests
{
    public sealed record Shape(int B, int Tq, int Tk, int TkCapacity, int Hq, int Hkv, int D)
    {
        public float Scale => 1f / MathF.Sqrt(D);
        public int QSize => B * Tq * Hq * D;
        public int KvSize => B * TkCapacity * Hkv * D;
        public override string ToString() => $"b{B} tq{Tq} tk{Tk}/{TkCapacity} hq{Hq} hkv{Hkv} d{D}";
    }

    public static TheoryData<Shape> Shapes => new()
    {
        new Shape(2, 5, 5, 5, 2, 2, 8),     // MHA, training
        new Shape(1, 7, 7, 9, 4, 2, 8),     // GQA ratio 2, spare cache capacity
        new Shape(2, 3, 11, 12, 4, 1, 48),  // GQA ratio 4, queries are the last 3 of 11 positions
        new Shape(1, 1, 19, 24, 8, 2, 64),  // one-token decode against a KV cache
        new Shape(1, 37, 37, 37, 2, 1, 8),  // rows long enough for every vector path
        new Shape(1, 4, 40, 41, 2, 2, 48),
        new Shape(1, 6, 90, 96, 4, 2, 8),   // ≥ 64 visible keys: several key tiles per row
        new Shape(2, 3, 5, 5, 2, 1, 6),     // d not a multiple of 4
        // Query blocks are 8 rows (4 below 512-bit vectors), done in sub-blocks of 8, 4, 2, 1; key tiles are up
        // to 3 vectors and the head dimension is split into balanced tiles of up to 3 vectors.
        new Shape(1, 13, 13, 13, 2, 2, 16), // tq = 8 + 4 + 1: every row sub-block
        new Shape(2, 11, 50, 53, 4, 2, 24), // tq = 8 + 2 + 1 against 50 keys; d = 24 is 1.5 vectors of 16
        new Shape(1, 9, 70, 70, 2, 1, 128), // d = 128: several head-dimension tiles
        new Shape(2, 20, 20, 20, 8, 2, 64), // GQA ratio 4, d = 64 (4 vectors of 16 split 2 + 2)
        new Shape(2, 1, 33, 40, 4, 4, 128), // one-token decode, d = 128
        new Shape(1, 5, 37, 40, 6, 3, 16),  // a short prefill chunk against a cache
        new Shape(1, 100, 100, 100, 1, 1, 8), // many blocks and key tiles (7 vectors of 16 keys: 3 + 2 + 2)
    };

    // Every vector width the kernel has (the narrower ones use 4-row blocks and 2-vector tiles).
    public static TheoryData<Shape, string> ShapesAndWidths()
    {
        var data = new TheoryData<Shape, string>();
        foreach (var shape in Shapes)
            foreach (var simd in Enum.GetNames<AttentionSimd>())
                data.Add(shape, simd);
        return data;
    }

    // Naive double-precision causal GQA with the full score matrix; returns (out, lse).
    private static (double[] Out, double[] Lse) Reference(Shape s, double[] q, double[] k, double[] v)
    {
        var output = new double[s.QSize];
        var lse = new double[s.B * s.Hq * s.Tq];
        int group = s.Hq / s.Hkv, offset = s.Tk - s.Tq;
        var p = new double[s.Tk];
        for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.Hq; h++)
        for (int i = 0; i < s.Tq; i++)
        {
            int qo = ((b * s.Tq + i) * s.Hq + h) * s.D;
            int n = i + offset + 1;
            double max = double.NegativeInfinity, sum = 0;
            for (int j = 0; j < n; j++)
            {
                int ko = ((b * s.TkCapacity + j) * s.Hkv + h / group) * s.D;
                double dot = 0;
                for (int c = 0; c < s.D; c++) dot += q[qo + c] * k[ko + c];
                p[j] = s.Scale * dot;
                max = Math.Max(max, p[j]);
            }
            for (int j = 0; j < n; j++) sum += p[j] = Math.Exp(p[j] - max);
            lse[(b * s.Hq + h) * s.Tq + i] = max + Math.Log(sum);
            for (int j = 0; j < n; j++)
            {
                int vo = ((b * s.TkCapacity + j) * s.Hkv + h / group) * s.D;
                for (int c = 0; c < s.D; c++) output[qo + c] += p[j] / sum * v[vo + c];
            }
        }
        return (output, lse);
    }

    // Naive double-precision gradients of Σ dout ∘ out with respect to q, k, v.
    private static (double[] Dq, double[] Dk, double[] Dv) ReferenceBackward(Shape s, double[] q, double[] k, double[] v, double[] dout)
    {
        var dq = new double[s.QSize];
        var dk = new double[s.KvSize];
        var dv = new double[s.KvSize];
        var lse = Reference(s, q, k, v).Lse;
        int group = s.Hq / s.Hkv, offset = s.Tk - s.Tq;
        var p = new double[s.Tk];
        var dp = new double[s.Tk];
        for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.Hq; h++)
        for (int i = 0; i < s.Tq; i++)
        {
            int qo = ((b * s.Tq + i) * s.Hq + h) * s.D;
            int n = i + offset + 1;
            double pdp = 0;
            for (int j = 0; j < n; j++)
            {
                int ko = ((b * s.TkCapacity + j) * s.Hkv + h / group) * s.D;
                double dot = 0, dvdot = 0;
                for (int c = 0; c < s.D; c++)
                {
                    dot += q[qo + c] * k[ko + c];
                    dvdot += dout[qo + c] * v[ko + c];
                }
                p[j] = Math.Exp(s.Scale * dot - lse[(b * s.Hq + h) * s.Tq + i]);
                dp[j] = dvdot;
                pdp += p[j] * dp[j];
            }
            for (int j = 0; j < n; j++)
            {
                int ko = ((b * s.TkCapacity + j) * s.Hkv + h / group) * s.D;
                double ds = p[j] * (dp[j] - pdp);
                for (int c = 0; c < s.D; c++)
                {
                    dq[qo + c] += s.Scale * ds * k[ko + c];
                    dk[ko + c] += s.Scale * ds * q[qo + c];
                    dv[ko + c] += p[j] * dout[qo + c];
                }
            }
        }
        return (dq, dk, dv);
    }

    // Keys and values beyond tk hold NaN: the kernel must never read them.
    private static float[] KeysOrValues(Random rng, Shape s)
    {
        var a = KernelCheck.Random(rng, s.KvSize);
        for (int b = 0; b < s.B; b++)
            for (int j = s.Tk; j < s.TkCapacity; j++)
                Array.Fill(a, float.NaN, ((b * s.TkCapacity + j) * s.Hkv) * s.D, s.Hkv * s.D);
        return a;
    }

    [Theory]
    [MemberData(nameof(ShapesAndWidths))]
    public void ForwardMatchesReference(Shape s, string width)
    {
        var simd = Enum.Parse<AttentionSimd>(width);
        var rng = new Random(s.Tq * 100 + s.Tk + s.D);
        var q = KernelCheck.Random(rng, s.QSize, 2);
        var k = KeysOrValues(rng, s);
        var v = KeysOrValues(rng, s);
        var output = new float[s.QSize];
        var lse = new float[s.B * s.Hq * s.Tq];
        var outputNoLse = new float[s.QSize];
        fixed (float* pq = q, pk = k, pv = v, po = output, plse = lse, pon = outputNoLse)
        {
            AttentionKernel.Forward(simd, pq, pk, pv, po, plse, s.B, s.Tq, s.Tk, s.TkCapacity, s.Hq, s.Hkv, s.D, s.Scale);
            AttentionKernel.Forward(simd, pq, pk, pv, pon, null, s.B, s.Tq, s.Tk, s.TkCapacity, s.Hq, s.Hkv, s.D, s.Scale);
        }
        var (refOut, refLse) = Reference(s, KernelCheck.ToDouble(q), KernelCheck.ToDouble(k), KernelCheck.ToDouble(v));
        KernelCheck.Close(output, refOut, 2e-6, $"attention out {s} {simd}");
        KernelCheck.Close(lse, refLse, 2e-6, $"attention lse {s} {simd}");
        Assert.Equal(output, outputNoLse);
    }

    [Theory]
    [MemberData(nameof(ShapesAndWidths))]
    public void BackwardMatchesReferenceAndFiniteDifferences(Shape s, string width)
    {
        var simd = Enum.Parse<AttentionSimd>(width);
        var rng = new Random(s.Tq * 7 + s.Tk * 3 + s.D);
        var q = KernelCheck.Random(rng, s.QSize, 2);
        var k = KeysOrValues(rng, s);
        var v = KeysOrValues(rng, s);
        var dout = KernelCheck.Random(rng, s.QSize);
        var output = new float[s.QSize];
        var lse = new float[s.B * s.Hq * s.Tq];
        const float Sentinel = 12345f; // dq, dk, dv are overwritten; dk, dv rows ≥ tk keep this
        var dq = Enumerable.Repeat(Sentinel, s.QSize).ToArray();
        var dk = Enumerable.Repeat(Sentinel, s.KvSize).ToArray();
        var dv = Enumerable.Repeat(Sentinel, s.KvSize).ToArray();
        fixed (float* pq = q, pk = k, pv = v, pdo = dout, po = output, plse = lse, pdq = dq, pdk = dk, pdv = dv)
        {
            AttentionKernel.Forward(simd, pq, pk, pv, po, plse, s.B, s.Tq, s.Tk, s.TkCapacity, s.Hq, s.Hkv, s.D, s.Scale);
            AttentionKernel.Backward(simd, pdo, pq, pk, pv, po, plse, pdq, pdk, pdv, s.B, s.Tq, s.Tk, s.TkCapacity, s.Hq, s.Hkv, s.D, s.Scale);
        }

        // Only the valid rows take part in the comparisons (the spare rows hold NaN inputs).
        var validRows = Enumerable.Range(0, s.KvSize).Where(i => i / (s.Hkv * s.D) % s.TkCapacity < s.Tk).ToArray();
        var spareRows = Enumerable.Range(0, s.KvSize).Except(validRows).ToArray();
        Assert.All(spareRows, i => Assert.Equal(Sentinel, dk[i]));
        Assert.All(spareRows, i => Assert.Equal(Sentinel, dv[i]));

        var qd = KernelCheck.ToDouble(q);
        var kd = KernelCheck.ToDouble(k);
        var vd = KernelCheck.ToDouble(v);
        var doutd = KernelCheck.ToDouble(dout);
        var (refDq, refDk, refDv) = ReferenceBackward(s, qd, kd, vd, doutd);
        KernelCheck.Close(dq, refDq, 1e-5, $"attention dq {s} {simd}");
        KernelCheck.Close(validRows.Select(i => dk[i]).ToArray(), validRows.Select(i => refDk[i]).ToArray(), 1e-5, $"attention dk {s} {simd}");
        KernelCheck.Close(validRows.Select(i => dv[i]).ToArray(), validRows.Select(i => refDv[i]).ToArray(), 1e-5, $"attention dv {s} {simd}");

        // Finite differences of f = Σ dout ∘ out on the valid coordinates of q, k and v.
        double F(double[] qv, double[] kv, double[] vv) => KernelCheck.Dot(doutd, Reference(s, qv, kv, vv).Out);
        KernelCheck.FiniteDifference(x => F(x, kd, vd), qd, dq, 1e-5, $"attention dq {s}", maxCoords: 24);
        var kValid = validRows.Select(i => kd[i]).ToArray();
        var vValid = validRows.Select(i => vd[i]).ToArray();
        double[] Scatter(double[] valid, double[] full)
        {
            var copy = (double[])full.Clone();
            for (int i = 0; i < validRows.Length; i++) copy[validRows[i]] = valid[i];
            return copy;
        }
        KernelCheck.FiniteDifference(x => F(qd, Scatter(x, kd), vd), kValid, validRows.Select(i => dk[i]).ToArray(), 1e-5, $"attention dk {s}", maxCoords: 24);
        KernelCheck.FiniteDifference(x => F(qd, kd, Scatter(x, vd)), vValid, validRows.Select(i => dv[i]).ToArray(), 1e-5, $"attention dv {s}", maxCoords: 24);
    }

    // The kernel's exp on every width: within 2 ulp wherever e^x is a normal float, within the smallest normal
    // below that, exactly 0 at −∞, NaN for NaN.
    [Theory]
    [InlineData("Vector128")]
    [InlineData("Vector256")]
    [InlineData("Vector512")]
    public void ExpIsAccurateOverTheSoftmaxRange(string width)
    {
        var simd = Enum.Parse<AttentionSimd>(width);
        var inputs = new List<float> { float.NegativeInfinity, float.NaN, 0f, -0f, -1e-30f, 1e-6f, -87.3f, -87.4f, -103.9f, -104f, -104.5f, -110f, -200f, float.MinValue };
        for (int i = 0; i <= 200_000; i++) inputs.Add(-120f + 208f * i / 200_000); // −120 … 88
        var rng = new Random(5);
        for (int i = 0; i < 50_000; i++) inputs.Add(-(float)rng.NextDouble() * 20f);
        while (inputs.Count % 16 != 0) inputs.Add(0f);
        var x = inputs.ToArray();
        var y = new float[x.Length];
        fixed (float* px = x, py = y) AttentionKernel.Exp(simd, px, py, x.Length);

        Assert.Equal(0f, y[0]);
        Assert.True(float.IsNaN(y[1]), $"exp(NaN) = {y[1]}");
        double worstUlps = 0, worstTiny = 0;
        float worstAt = 0;
        for (int i = 2; i < x.Length; i++)
        {
            double exact = Math.Exp(x[i]);
            if (exact >= 1.1754943508222875e-38) // the smallest normal float
            {
                double ulp = Math.Pow(2, Math.Floor(Math.Log2(exact)) - 23);
                double ulps = Math.Abs(y[i] - exact) / ulp;
                if (ulps > worstUlps) (worstUlps, worstAt) = (ulps, x[i]);
            }
            else worstTiny = Math.Max(worstTiny, Math.Abs(y[i] - exact));
        }
        Assert.True(worstUlps <= 2, $"exp {simd}: max error {worstUlps:F2} ulp at x = {worstAt}");
        Assert.True(worstTiny <= 1.2e-38, $"exp {simd}: max error {worstTiny} below the normal range");
    }

    // A query whose scores are NaN gets NaN out (no silent garbage); the other queries are unaffected.
    [Theory]
    [InlineData("Vector128")]
    [InlineData("Vector256")]
    [InlineData("Vector512")]
    public void NaNScoresPropagateToTheirQueryOnly(string width)
    {
        var simd = Enum.Parse<AttentionSimd>(width);
        var s = new Shape(1, 12, 12, 12, 1, 1, 16);
        var rng = new Random(3);
        var q = KernelCheck.Random(rng, s.QSize);
        var k = KernelCheck.Random(rng, s.KvSize);
        var v = KernelCheck.Random(rng, s.KvSize);
        q[5 * s.D + 2] = float.NaN; // query 5
        var output = new float[s.QSize];
        var lse = new float[s.Tq];
        fixed (float* pq = q, pk = k, pv = v, po = output, plse = lse)
            AttentionKernel.Forward(simd, pq, pk, pv, po, plse, s.B, s.Tq, s.Tk, s.TkCapacity, s.Hq, s.Hkv, s.D, s.Scale);
        for (int i = 0; i < s.Tq; i++)
        {
            var row = output.AsSpan(i * s.D, s.D).ToArray();
            if (i == 5) Assert.All(row, value => Assert.True(float.IsNaN(value), $"query 5 output {value}"));
            else Assert.All(row, value => Assert.True(float.IsFinite(value), $"query {i} output {value}"));
        }
    }

    // Sharply peaked attention (scaled scores spread over tens): most probabilities underflow, the rest must still match.
    [Theory]
    [InlineData("Vector128")]
    [InlineData("Vector256")]
    [InlineData("Vector512")]
    public void PeakedScoresMatchReference(string width)
    {
        var simd = Enum.Parse<AttentionSimd>(width);
        var s = new Shape(1, 20, 37, 37, 2, 1, 24);
        var rng = new Random(11);
        var q = KernelCheck.Random(rng, s.QSize, 60);
        var k = KernelCheck.Random(rng, s.KvSize, 2);
        var v = KernelCheck.Random(rng, s.KvSize);
        var dout = KernelCheck.Random(rng, s.QSize);
        var output = new float[s.QSize];
        var lse = new float[s.B * s.Hq * s.Tq];
        var dq = new float[s.QSize];
        var dk = new float[s.KvSize];
        var dv = new float[s.KvSize];
        fixed (float* pq = q, pk = k, pv = v, pdo = dout, po = output, plse = lse, pdq = dq, pdk = dk, pdv = dv)
        {
            AttentionKernel.Forward(simd, pq, pk, pv, po, plse, s.B, s.Tq, s.Tk, s.TkCapacity, s.Hq, s.Hkv, s.D, s.Scale);
            AttentionKernel.Backward(simd, pdo, pq, pk, pv, po, plse, pdq, pdk, pdv, s.B, s.Tq, s.Tk, s.TkCapacity, s.Hq, s.Hkv, s.D, s.Scale);
        }
        var (qd, kd, vd) = (KernelCheck.ToDouble(q), KernelCheck.ToDouble(k), KernelCheck.ToDouble(v));
        var (refOut, refLse) = Reference(s, qd, kd, vd);
        // Scores this large carry their float rounding (~1e-6 of ~50) into the exponent, so the tolerances grow with them.
        KernelCheck.Close(output, refOut, 2e-5, $"peaked attention out {s} {simd}");
        KernelCheck.Close(lse, refLse, 1e-5, $"peaked attention lse {s} {simd}");
        var (refDq, refDk, refDv) = ReferenceBackward(s, qd, kd, vd, KernelCheck.ToDouble(dout));
        KernelCheck.Close(dq, refDq, 1e-5, $"peaked attention dq {s} {simd}");
        KernelCheck.Close(dk, refDk, 1e-4, $"peaked attention dk {s} {simd}");
        KernelCheck.Close(dv, refDv, 1e-4, $"peaked attention dv {s} {simd}");
    }

    [Fact]
    public void RejectsInconsistentShapes()
    {
        var buffer = new float[64];
        fixed (float* p = buffer)
        {
            float* ptr = p;
            Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(ptr, ptr, ptr, ptr, null, 1, 2, 2, 2, 3, 2, 4, 1f));
            Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(ptr, ptr, ptr, ptr, null, 1, 3, 2, 2, 2, 2, 4, 1f));
            Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(ptr, ptr, ptr, ptr, null, 1, 2, 3, 2, 2, 2, 4, 1f));
        }
    }
}
