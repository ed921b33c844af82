using PeftGen.Quantization;
using PeftGen.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Quantization;

public unsafe class QuantizedWeightTests(ITestOutputHelper output)
{
    internal static float[] Normal(int count, int seed, float std = 0.02f)
    {
        var random = new Random(seed);
        var w = new float[count];
        for (int i = 0; i < count; i++) w[i] = (float)(random.NextGaussian() * std);
        return w;
    }

    private static double MaxGap(ReadOnlySpan<float> values)
    {
        var sorted = values.ToArray();
        Array.Sort(sorted);
        double gap = 0;
        for (int i = 1; i < sorted.Length; i++) gap = Math.Max(gap, sorted[i] - sorted[i - 1]);
        return gap;
    }

    [Theory]
    [InlineData(QuantType.NF4, 32, false)]
    [InlineData(QuantType.NF4, 64, false)]
    [InlineData(QuantType.NF4, 64, true)]
    [InlineData(QuantType.NF4, 256, true)]
    [InlineData(QuantType.NF4, 4096, true)]
    [InlineData(QuantType.FP4, 32, true)]
    [InlineData(QuantType.FP4, 64, false)]
    [InlineData(QuantType.FP4, 128, true)]
    [InlineData(QuantType.FP4, 1024, false)]
    public void RoundTripErrorIsWithinHalfTheLargestCodeGap(QuantType type, int blockSize, bool doubleQuant)
    {
        // 300 x 197: blocks straddle rows, the last block is partial, and DQ has a partial group of blocks.
        const int rows = 300, cols = 197;
        var w = Normal(rows * cols, seed: blockSize + (int)type);
        // Rows at different scales, so block absmax values (and their double quantization) spread out.
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) w[r * cols + c] *= MathF.Exp((r % 17 - 8) * 0.25f);
        var q = QuantizedWeight.Quantize(w, rows, cols, type, blockSize, doubleQuant);
        var deq = new float[w.Length];
        q.Dequantize(deq);

        double halfGap = MaxGap(Codebooks.Values(type)) / 2;
        // Double quantization: the absmax itself is off by at most half a dynamic-map gap times its group scale
        // (the map stops at ±0.992969 below and 1 above, so -1 is 0.00703 from its nearest entry).
        var map = DynamicMap.Signed.ToArray();
        double dqHalfGap = Math.Max(MaxGap(map) / 2, map[0] + 1);
        double worstRatio = 0, worstErr = 0, worstAbsmaxErr = 0;
        for (int b = 0; b < q.BlockCount; b++)
        {
            int start = b * blockSize, end = Math.Min(start + blockSize, w.Length);
            float absmax = 0;
            for (int i = start; i < end; i++) absmax = Math.Max(absmax, Math.Abs(w[i]));
            double absmaxErr = Math.Abs(q.BlockScale(b) - absmax);
            double bound = absmax * halfGap + absmax * 1e-6;
            if (doubleQuant)
            {
                float scale = q.AbsmaxScales[b / QuantizedWeight.DoubleQuantBlockSize];
                // Plus float32 rounding of map[code] · scale + offset.
                double dqBound = scale * dqHalfGap * (1 + 1e-5) + (scale + q.AbsmaxOffset) * 1e-6;
                Assert.True(absmaxErr <= dqBound, $"block {b}: |absmax − dequantized absmax| = {absmaxErr:E3} > {dqBound:E3}");
                bound += dqBound;
                worstAbsmaxErr = Math.Max(worstAbsmaxErr, absmaxErr / dqBound);
            }
            else Assert.Equal(absmax, q.Absmax[b]);
            for (int i = start; i < end; i++)
            {
                double err = Math.Abs(w[i] - deq[i]);
                worstErr = Math.Max(worstErr, err);
                worstRatio = Math.Max(worstRatio, err / bound);
                Assert.True(err <= bound, $"element {i} (block {b}): |w − deq| = {err:E3} > bound {bound:E3}");
            }
        }
        output.WriteLine($"{type} block {blockSize} DQ {doubleQuant}: max |w − deq| = {worstErr:E3}, max err/bound = {worstRatio:F4}" +
            (doubleQuant ? $", max absmax err/bound = {worstAbsmaxErr:F4}" : ""));
    }

    [Theory]
    [InlineData(QuantType.NF4)]
    [InlineData(QuantType.FP4)]
    public void EveryCodeIsTheNearestOneWithoutDoubleQuantization(QuantType type)
    {
        const int rows = 64, cols = 100, blockSize = 64;
        var w = Normal(rows * cols, seed: 11);
        var q = QuantizedWeight.Quantize(w, rows, cols, type, blockSize, doubleQuant: false);
        var values = Codebooks.Values(type);
        double worst = 0;
        for (int i = 0; i < w.Length; i++)
        {
            int code = (q.PackedCodes[i / 2] >> (i % 2 == 0 ? 4 : 0)) & 0xF;
            float x = w[i] * (1f / q.Absmax[i / blockSize]);
            double nearest = double.MaxValue;
            foreach (float v in values) nearest = Math.Min(nearest, Math.Abs(x - v));
            worst = Math.Max(worst, Math.Abs(x - values[code]) - nearest);
        }
        output.WriteLine($"{type}: worst excess distance over the nearest code = {worst:E3}");
        Assert.True(worst < 1e-6, $"{type}: a code is {worst:E3} farther than the nearest");
    }

    [Fact]
    public void StorageIsExactly4Point5BitsWithoutDoubleQuantAndAbout4Point127With()
    {
        const int rows = 256, cols = 4096; // 1,048,576 weights = 64 · 256 · 64: whole DQ groups
        var w = Normal(rows * cols, seed: 3);
        var plain = QuantizedWeight.Quantize(w, rows, cols, QuantType.NF4, 64, doubleQuant: false);
        var dq = QuantizedWeight.Quantize(w, rows, cols, QuantType.NF4, 64, doubleQuant: true);
        output.WriteLine($"256 x 4096, block 64: {plain.StorageBytes} bytes = {plain.BitsPerParameter:F6} bits/param without DQ; " +
            $"{dq.StorageBytes} bytes = {dq.BitsPerParameter:F6} bits/param with DQ (fp32 would be {rows * cols * 4} bytes)");
        Assert.Equal(rows * cols / 2 + rows * cols / 64 * 4, plain.StorageBytes);
        Assert.Equal(4.5, plain.BitsPerParameter);
        Assert.Equal(rows * cols / 2 + rows * cols / 64 + rows * cols / 64 / 256 * 4 + 4, dq.StorageBytes);
        Assert.InRange(dq.BitsPerParameter, 4.126, 4.128);
        Assert.Equal(rows * cols / 64, dq.AbsmaxCodes.Length);
        Assert.Equal(rows * cols / 64 / 256, dq.AbsmaxScales.Length);
        Assert.True(dq.Absmax.IsEmpty && plain.AbsmaxCodes.IsEmpty && plain.AbsmaxScales.IsEmpty);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-64)]
    [InlineData(16)]
    [InlineData(48)]
    [InlineData(100)]
    [InlineData(8192)]
    public void RejectsBlockSizesThatAreNotPowersOfTwoFrom32To4096(int blockSize)
    {
        var ex = Assert.Throws<ArgumentException>(() => QuantizedWeight.Quantize(new float[64 * 64], 64, 64, QuantType.NF4, blockSize));
        output.WriteLine(ex.Message);
        Assert.Contains(blockSize.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message);
        Assert.Equal("blockSize", ex.ParamName);
    }

    [Fact]
    public void RejectsBadShapesAndNonFiniteWeights()
    {
        var ex = Assert.Throws<ArgumentException>(() => QuantizedWeight.Quantize(new float[10], 3, 4, QuantType.NF4));
        Assert.Contains("[3, 4]", ex.Message);
        Assert.ThrowsAny<ArgumentException>(() => QuantizedWeight.Quantize(new float[4], 0, 4, QuantType.NF4));
        var w = Normal(6 * 70, seed: 5);
        w[2 * 70 + 9] = float.NaN;
        w[5 * 70 + 1] = float.PositiveInfinity;
        ex = Assert.Throws<ArgumentException>(() => QuantizedWeight.Quantize(w, 6, 70, QuantType.FP4, 32));
        output.WriteLine(ex.Message);
        Assert.Contains("[2, 9]", ex.Message);
        Assert.Contains("NaN", ex.Message);
    }

    [Fact]
    public void AllZeroBlocksDequantizeToZero()
    {
        var w = Normal(4 * 64, seed: 9);
        Array.Clear(w, 64, 64);
        foreach (var type in new[] { QuantType.NF4, QuantType.FP4 })
        {
            var q = QuantizedWeight.Quantize(w, 4, 64, type, 64, doubleQuant: false);
            Assert.Equal(0f, q.Absmax[1]);
            // 0 · (1 / 0) is NaN, which (as in bitsandbytes) encodes to code 0 in both types.
            Assert.All(q.PackedCodes.Slice(32, 32).ToArray(), b => Assert.Equal(0, b));
            var deq = new float[w.Length];
            q.Dequantize(deq);
            Assert.All(deq.AsSpan(64, 64).ToArray(), v => Assert.Equal(0f, v));
        }
    }

    [Fact]
    public void OddCountsPadTheLastLowNibbleWithTheCodeOfZero()
    {
        var w = Normal(3 * 33, seed: 2); // 99 elements, blocks of 32: the last holds 3
        var nf4 = QuantizedWeight.Quantize(w, 3, 33, QuantType.NF4, 32, doubleQuant: false);
        var fp4 = QuantizedWeight.Quantize(w, 3, 33, QuantType.FP4, 32, doubleQuant: false);
        Assert.Equal(50, nf4.PackedCodes.Length);
        Assert.Equal(7, nf4.PackedCodes[49] & 0xF);  // NF4 code of 0.0
        Assert.Equal(0, fp4.PackedCodes[49] & 0xF);  // FP4 code of +0
        Assert.Equal(Codebooks.EncodeNF4(w[98] * (1f / nf4.Absmax[3])), nf4.PackedCodes[49] >> 4);
    }

    [Theory]
    [InlineData(QuantType.NF4, 32, true)]
    [InlineData(QuantType.FP4, 64, false)]
    public void RowsTilesAndEveryDecoderAgreeWithTheFullDequantization(QuantType type, int blockSize, bool doubleQuant)
    {
        const int rows = 37, cols = 75; // odd columns: rows start on odd elements (low nibbles) half the time
        var w = Normal(rows * cols, seed: 21);
        var q = QuantizedWeight.Quantize(w, rows, cols, type, blockSize, doubleQuant);
        var full = new float[rows * cols];
        q.Dequantize(full);

        // Reference: decode every element by hand from the public storage.
        var values = Codebooks.Values(type);
        for (int i = 0; i < full.Length; i++)
        {
            int code = (q.PackedCodes[i / 2] >> (i % 2 == 0 ? 4 : 0)) & 0xF;
            Assert.Equal(values[code] * q.BlockScale(i / blockSize), full[i]);
        }

        var part = new float[5 * cols];
        q.DequantizeRows(11, 5, part);
        Assert.Equal(full.AsSpan(11 * cols, 5 * cols).ToArray(), part);

        foreach (var decoder in Enum.GetValues<NibbleDecoder>())
        {
            if (!NibbleDecoders.IsSupported(decoder)) continue;
            // Tiles at every column offset parity and width, written with a row stride wider than the tile.
            foreach (var (c0, nc) in new[] { (0, cols), (1, 64), (2, 33), (7, 68), (40, 35) })
            {
                const int r0 = 3, nr = 30, ld = 80;
                var tile = new float[nr * ld];
                fixed (float* t = tile) q.DequantizeTile(r0, nr, c0, nc, t, ld, decoder);
                for (int r = 0; r < nr; r++)
                    for (int c = 0; c < nc; c++)
                        Assert.True(full[(r0 + r) * cols + c0 + c] == tile[r * ld + c],
                            $"{decoder}: tile ({c0}, {nc}) element [{r}, {c}] = {tile[r * ld + c]}, expected {full[(r0 + r) * cols + c0 + c]}");
            }
        }
        output.WriteLine($"{type}: rows, tiles and decoders {string.Join(", ", Enum.GetValues<NibbleDecoder>().Where(NibbleDecoders.IsSupported))} bit-identical");

        Assert.Throws<ArgumentOutOfRangeException>(() => q.DequantizeRows(35, 5, new float[5 * cols]));
        Assert.Throws<ArgumentException>(() => q.DequantizeRows(0, 2, new float[cols]));
        Assert.Throws<ArgumentException>(() => q.Dequantize(new float[10]));
    }

    [Fact]
    public void FromStorageRoundTripsTheRawArrays()
    {
        var w = Normal(50 * 90, seed: 8);
        foreach (bool dq in new[] { false, true })
        {
            var q = QuantizedWeight.Quantize(w, 50, 90, QuantType.NF4, 64, dq);
            var copy = dq
                ? QuantizedWeight.FromStorage(50, 90, QuantType.NF4, 64, q.PackedCodes, q.AbsmaxCodes, q.AbsmaxScales, q.AbsmaxOffset)
                : QuantizedWeight.FromStorage(50, 90, QuantType.NF4, 64, q.PackedCodes, q.Absmax);
            var a = new float[w.Length];
            var b = new float[w.Length];
            q.Dequantize(a);
            copy.Dequantize(b);
            Assert.Equal(a, b);
            Assert.Equal(q.StorageBytes, copy.StorageBytes);
        }
        var ex = Assert.Throws<ArgumentException>(() => QuantizedWeight.FromStorage(50, 90, QuantType.NF4, 64, new byte[10], new float[71]));
        Assert.Contains("2250", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => QuantizedWeight.FromStorage(50, 90, QuantType.NF4, 64, new byte[2250], new float[70]));
        Assert.Contains("71", ex.Message);
    }
}
