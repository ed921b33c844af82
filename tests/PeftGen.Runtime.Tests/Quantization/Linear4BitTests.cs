using System.Diagnostics;
using PeftGen.Autograd;
using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cpu.Kernels;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Quantization;

public unsafe class Linear4BitTests(ITestOutputHelper output)
{
    private static QuantizedWeight Weight(int outF, int inF, QuantType type, int blockSize, bool dq, int seed) =>
        QuantizedWeight.Quantize(QuantizedWeightTests.Normal(outF * inF, seed), outF, inF, type, blockSize, dq);

    private static float[] Dequantized(QuantizedWeight w)
    {
        var d = new float[w.Count];
        w.Dequantize(d);
        return d;
    }

    /// <summary>max |actual − expected| / max |expected|.</summary>
    private static double RelativeError(ReadOnlySpan<float> actual, double[] expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double err = 0, scale = 1e-30;
        for (int i = 0; i < expected.Length; i++)
        {
            err = Math.Max(err, Math.Abs(actual[i] - expected[i]));
            scale = Math.Max(scale, Math.Abs(expected[i]));
        }
        return err / scale;
    }

    /// <summary>y [rows, out] = x · Wᵀ in double.</summary>
    private static double[] NaiveForward(float[] x, float[] w, int rows, int outF, int inF)
    {
        var y = new double[rows * outF];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double s = 0;
                for (int i = 0; i < inF; i++) s += (double)x[r * inF + i] * w[o * inF + i];
                y[r * outF + o] = s;
            }
        return y;
    }

    [Theory]
    [InlineData(24, 100, QuantType.NF4, 32, true)]      // blocks straddle rows
    [InlineData(33, 7, QuantType.FP4, 64, false)]       // odd element count, blocks cover several rows
    [InlineData(1100, 1000, QuantType.NF4, 64, true)]   // forward: 3 tiles across the outputs, 4 deep
    [InlineData(300, 2000, QuantType.FP4, 128, true)]   // backward: 5 tiles across the inputs
    public void ForwardAndInputGradientMatchNaiveProducts(int outF, int inF, QuantType type, int blockSize, bool dq)
    {
        using var scope = TensorScope.Begin();
        var q = Weight(outF, inF, type, blockSize, dq, seed: outF + inF);
        var w = Dequantized(q);
        using var layer = new Linear4Bit(q);
        const int rows = 6;
        var x = Tensor.RandN([2, 3, inF], new Random(1));
        var y = layer.Forward(x);
        Assert.Equal([2, 3, outF], y.Shape.ToArray());
        double fwd = RelativeError(y.ToArray(), NaiveForward(x.ToArray(), w, rows, outF, inF));

        // dx = dy · W, written and then accumulated.
        var dy = QuantizedWeightTests.Normal(rows * outF, seed: 4, std: 1f);
        var expected = new double[rows * inF];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < inF; i++)
            {
                double s = 0;
                for (int o = 0; o < outF; o++) s += (double)dy[r * outF + o] * w[o * inF + i];
                expected[r * inF + i] = s;
            }
        var dx = new float[rows * inF];
        fixed (float* pdy = dy, pdx = dx) Dequant4BitMatMulKernel.BackwardInput(pdy, q, pdx, rows, accumulate: false);
        double bwd = RelativeError(dx, expected);
        fixed (float* pdy = dy, pdx = dx) Dequant4BitMatMulKernel.BackwardInput(pdy, q, pdx, rows, accumulate: true);
        double acc = RelativeError(dx, expected.Select(v => 2 * v).ToArray());
        output.WriteLine($"[{outF}, {inF}] {type} block {blockSize} DQ {dq}: relative max error forward {fwd:E2}, dx {bwd:E2}, accumulated dx {acc:E2}");
        Assert.True(fwd < 1e-4, $"forward: {fwd:E3}");
        Assert.True(bwd < 1e-4, $"dx: {bwd:E3}");
        Assert.True(acc < 1e-4, $"accumulated dx: {acc:E3}");
    }

    [Fact]
    public void InputGradientMatchesFiniteDifferencesAndTheWeightHasNoParameters()
    {
        using var scope = TensorScope.Begin();
        var random = new Random(5);
        using var linear = new Linear(40, 24, hasBias: true, random);
        using var layer = Linear4Bit.FromLinear(linear, QuantType.NF4, blockSize: 32);
        var x = GradCheck.Param(random, 1f, 2, 3, 40);
        GradCheck.Assert(inputs => layer.Forward(inputs[0]), [x], eps: 1e-2f, tolerance: 1e-3f);

        Assert.Empty(layer.TrainableParameters());
        Assert.Equal((0L, 24L), layer.CountParameters());
        var (name, bias) = Assert.Single(layer.NamedParameters());
        Assert.Equal("bias", name);
        Assert.False(bias.RequiresGrad);
        Assert.Equal(linear.Bias!.ToArray(), bias.ToArray());

        // The bias is added, and the layer is linear in x around it.
        var input = Tensor.RandN([5, 40], random);
        var withBias = layer.Forward(input).ToArray();
        var w = layer.EffectiveWeight().ToArray();
        var naive = NaiveForward(input.ToArray(), w, 5, 24, 40);
        for (int i = 0; i < naive.Length; i++) naive[i] += bias.ToArray()[i % 24];
        double err = RelativeError(withBias, naive);
        output.WriteLine($"with bias: relative max error {err:E2}; trainable parameters: {layer.CountParameters().Trainable}");
        Assert.True(err < 1e-4, $"forward with bias: {err:E3}");
    }

    [Fact]
    public void NoGradientIsRecordedForAFrozenInput()
    {
        using var scope = TensorScope.Begin();
        using var layer = new Linear4Bit(Weight(8, 64, QuantType.NF4, 64, true, seed: 1));
        var y = layer.Forward(Tensor.RandN([3, 64], new Random(2)));
        Assert.False(y.RequiresGrad);
    }

    [Theory]
    [InlineData(768, 288, QuantType.NF4, 64, true)]
    [InlineData(45, 77, QuantType.FP4, 32, false)]    // odd columns: rows start on low nibbles
    [InlineData(300, 2048, QuantType.NF4, 4096, true)] // one block covers two rows
    [InlineData(64, 4100, QuantType.FP4, 64, true)]    // the transposed GEMV splits dx into column chunks
    public void OneRowGemvsEqualTheGemmPathsOnEveryDecoder(int outF, int inF, QuantType type, int blockSize, bool dq)
    {
        var q = Weight(outF, inF, type, blockSize, dq, seed: 7);
        var w = Dequantized(q);
        var x = QuantizedWeightTests.Normal(inF, seed: 8, std: 1f);
        var dy = QuantizedWeightTests.Normal(outF, seed: 9, std: 1f);
        var forwardReference = NaiveForward(x, w, 1, outF, inF);
        var backwardReference = new double[inF];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++) backwardReference[i] += (double)dy[o] * w[o * inF + i];

        var gemm = new float[outF];
        var dxGemm = new float[inF];
        fixed (float* px = x, pg = gemm, pdy = dy, pdx = dxGemm)
        {
            Dequant4BitMatMulKernel.ForwardTiled(px, q, pg, 1);
            Dequant4BitMatMulKernel.BackwardTiled(pdy, q, pdx, 1, accumulate: false);
        }
        double gemmErr = RelativeError(gemm, forwardReference), dxGemmErr = RelativeError(dxGemm, backwardReference);
        var gemv = new float[outF];
        var dx = new float[inF];
        var report = new List<string>();
        foreach (var decoder in Enum.GetValues<NibbleDecoder>())
        {
            if (!NibbleDecoders.IsSupported(decoder)) continue;
            Array.Fill(dx, 1f);
            fixed (float* px = x, pv = gemv, pdy = dy, pdx = dx)
            {
                Dequant4BitMatMulKernel.Gemv(px, q, pv, decoder);
                Dequant4BitMatMulKernel.GemvTransposed(pdy, q, pdx, accumulate: true, decoder);
            }
            double fwd = RelativeError(gemv, gemm.Select(v => (double)v).ToArray());
            double bwd = RelativeError(dx, dxGemm.Select(v => v + 1.0).ToArray());
            report.Add($"{decoder} y {fwd:E2} dx {bwd:E2}");
            Assert.True(fwd < 1e-5, $"{decoder} GEMV vs GEMM: {fwd:E3}");
            Assert.True(bwd < 1e-5, $"{decoder} transposed GEMV (accumulating) vs GEMM: {bwd:E3}");
        }
        // The public entry points take the GEMV paths for one row.
        fixed (float* px = x, pv = gemv, pdy = dy, pdx = dx)
        {
            Dequant4BitMatMulKernel.Forward(px, q, pv, 1);
            Dequant4BitMatMulKernel.BackwardInput(pdy, q, pdx, 1, accumulate: false);
        }
        double gemvErr = RelativeError(gemv, forwardReference), dxGemvErr = RelativeError(dx, backwardReference);
        output.WriteLine($"[{outF}, {inF}] {type}: relative error vs naive: y GEMM {gemmErr:E2}, GEMV {gemvErr:E2}; " +
            $"dx GEMM {dxGemmErr:E2}, GEMV {dxGemvErr:E2}; GEMV vs GEMM per decoder: {string.Join(", ", report)}");
        Assert.True(gemmErr < 1e-5 && gemvErr < 1e-5, $"y: GEMM {gemmErr:E3}, GEMV {gemvErr:E3}");
        Assert.True(dxGemmErr < 1e-5 && dxGemvErr < 1e-5, $"dx: GEMM {dxGemmErr:E3}, GEMV {dxGemvErr:E3}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(63)]
    [InlineData(8192)]
    public void FromLinearRejectsBadBlockSizesNamingTheValue(int blockSize)
    {
        using var linear = new Linear(64, 8, random: new Random(1));
        var ex = Assert.Throws<ArgumentException>(() => Linear4Bit.FromLinear(linear, QuantType.NF4, blockSize));
        output.WriteLine(ex.Message);
        Assert.Contains(blockSize.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message);
    }

    [Fact]
    public void RejectsInputsAndBiasesOfTheWrongSize()
    {
        using var scope = TensorScope.Begin();
        var q = Weight(8, 64, QuantType.NF4, 64, true, seed: 1);
        var ex = Assert.Throws<ArgumentException>(() => Ops.Linear4Bit(Tensor.Zeros(2, 63), q));
        Assert.Contains("[8, 64]", ex.Message);
        Assert.Throws<ArgumentException>(() => Ops.Linear4Bit(Tensor.Zeros(2, 64), q, Tensor.Zeros(9)));
        Assert.Throws<ArgumentException>(() => new Linear4Bit(q, Tensor.Zeros(7)));
    }
}

/// <summary>Forward timings of the 4-bit layer against the float one (printed, not asserted); runs alone.</summary>
[Collection("CpuThreads")]
public class Linear4BitTimingTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(2048, 288, 768)]
    [InlineData(2048, 768, 288)]
    public void ForwardTimeAgainstFloatLinear(int rows, int inF, int outF)
    {
        int savedThreads = CpuParallel.MaxThreads;
        CpuParallel.MaxThreads = 2;
        try
        {
            using var scope = TensorScope.Begin();
            using var linear = new Linear(inF, outF, random: new Random(1));
            using var nf4 = Linear4Bit.FromLinear(linear, QuantType.NF4);
            var x = Tensor.RandN([rows, inF], new Random(2));
            var row = x.Slice(0, 0, 1);
            double floatMs = Median(() => linear.Forward(x));
            double quantMs = Median(() => nf4.Forward(x));
            double gemvFloat = Median(() => linear.Forward(row), repeats: 200);
            double gemvQuant = Median(() => nf4.Forward(row), repeats: 200);
            output.WriteLine($"x [{rows}, {inF}] · W [{outF}, {inF}]ᵀ, 2 threads: float {floatMs:F3} ms, NF4+DQ {quantMs:F3} ms, " +
                $"ratio {quantMs / floatMs:F3}; one row: float {gemvFloat * 1000:F1} µs, NF4 GEMV {gemvQuant * 1000:F1} µs" +
                (OptimizedBuild ? "" : " (Debug build of PeftGen.Runtime: not representative, run with -c Release)"));
        }
        finally
        {
            CpuParallel.MaxThreads = savedThreads;
        }
    }

    private static bool OptimizedBuild =>
        typeof(Linear4Bit).Assembly.GetCustomAttributes(typeof(DebuggableAttribute), false)
            .Cast<DebuggableAttribute>().All(a => !a.IsJITOptimizerDisabled);

    private static double Median(Func<Tensor> forward, int repeats = 21)
    {
        using (GradMode.Disable())
        {
            // Long enough for tiered compilation to reach optimized code.
            for (long start = Stopwatch.GetTimestamp(); Stopwatch.GetElapsedTime(start).TotalMilliseconds < 500;)
            {
                using var warm = TensorScope.Begin();
                forward();
            }
            var times = new double[repeats];
            for (int i = 0; i < repeats; i++)
            {
                using var step = TensorScope.Begin();
                long start = Stopwatch.GetTimestamp();
                forward();
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            Array.Sort(times);
            return times[repeats / 2];
        }
    }
}
