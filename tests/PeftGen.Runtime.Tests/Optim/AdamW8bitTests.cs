using PeftGen.Backends.Cpu;
using PeftGen.Optim;
using PeftGen.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Optim;

public class AdamW8bitTests(ITestOutputHelper output)
{
    [Fact]
    public void Tracks_float32_AdamW_on_a_quadratic()
    {
        const int n = 10_000, steps = 200;
        var problem = new Quadratic(n, seed: 1);
        using var p32 = problem.NewParameter();
        using var p8 = problem.NewParameter();
        using var adam = new AdamW([p32], learningRate: 0.01f);
        using var adam8 = new AdamW8bit([p8], learningRate: 0.01f);
        double initialLoss = problem.Loss(p32);
        for (int t = 0; t < steps; t++)
        {
            problem.SetGradient(p32);
            adam.Step();
            problem.SetGradient(p8);
            adam8.Step();
        }
        double loss32 = problem.Loss(p32), loss8 = problem.Loss(p8);
        // Compare against the distance travelled. Each step's 8-bit moments differ from the float32 ones by up to
        // half a map step of their block scale (≤ 0.7 % of it in the top decade, coarser below) and the requantized
        // state carries those errors forward, so the runs drift apart by about a percent of the path (1.5 % over
        // seeds 1–3); 3 % leaves room for that while a wrong update (a sign, a bias correction, a mixed-up
        // map) moves whole blocks off and shows up as tens of percent.
        var a = p32.ToArray();
        var b = p8.ToArray();
        var start = problem.Start;
        double diff = 0, path = 0, worst = 0;
        for (int i = 0; i < n; i++)
        {
            diff += Math.Pow(a[i] - b[i], 2);
            path += Math.Pow(a[i] - start[i], 2);
            worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        }
        double relative = Math.Sqrt(diff / path);
        output.WriteLine($"loss {initialLoss:F2} → fp32 {loss32:F5}, 8-bit {loss8:F5}; ‖p8 − p32‖/‖p32 − p0‖ = {relative:E3}, max |Δp| = {worst:E3}");
        Assert.True(relative < 0.03, $"‖p8 − p32‖ / ‖p32 − p0‖ = {relative:E3} (max |Δp| = {worst:E3})");
        Assert.True(loss32 < initialLoss * 0.01, $"fp32 AdamW loss went {initialLoss:E3} → {loss32:E3}");
        Assert.True(loss8 < initialLoss * 0.01 && Math.Abs(loss8 - loss32) < 0.1 * loss32,
            $"8-bit loss {loss8:E4} vs fp32 {loss32:E4} (initial {initialLoss:E3}, largest |Δp| {worst:E3})");
    }

    [Fact]
    public void Tensors_under_the_8bit_minimum_are_bit_identical_to_AdamW()
    {
        var problem = new Quadratic(AdamW8bit.MinElementsFor8Bit - 1, seed: 2);
        using var p32 = problem.NewParameter();
        using var p8 = problem.NewParameter();
        var groups32 = new[] { new ParameterGroup([p32], LearningRateScale: 2f, WeightDecay: 0.1f) };
        var groups8 = new[] { new ParameterGroup([p8], LearningRateScale: 2f, WeightDecay: 0.1f) };
        using var adam = new AdamW(groups32, learningRate: 0.02f);
        using var adam8 = new AdamW8bit(groups8, learningRate: 0.02f);
        for (int t = 0; t < 20; t++)
        {
            problem.SetGradient(p32);
            adam.Step();
            problem.SetGradient(p8);
            adam8.Step();
        }
        var (mismatches, worst) = Compare(p32.ToArray(), p8.ToArray());
        Assert.True(mismatches == 0, $"{mismatches} elements differ, largest |Δ| = {worst:E3}");
        Assert.Equal(8L * p8.Count, adam8.StateBytes);
    }

    [Fact]
    public void State_takes_about_2_bytes_per_parameter_against_8_for_float32()
    {
        // An element count no other test uses, so neither optimizer's first step gets a pooled buffer and the
        // managed allocation of that step is the state itself.
        const int n = 1_000_003;
        var problem = new Quadratic(n, seed: 3);
        using var p32 = problem.NewParameter();
        using var p8 = problem.NewParameter();
        using var adam = new AdamW([p32]);
        using var adam8 = new AdamW8bit([p8]);
        problem.SetGradient(p32);
        problem.SetGradient(p8);
        WarmUp();

        long before = GC.GetAllocatedBytesForCurrentThread();
        adam.Step();
        double fp32PerParam = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)n;
        before = GC.GetAllocatedBytesForCurrentThread();
        adam8.Step();
        double int8PerParam = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)n;
        double reportedPerParam = adam8.StateBytes / (double)n;
        const double expected = 2 + 8.0 / 256;
        output.WriteLine($"state bytes/param: fp32 AdamW {fp32PerParam:F4} (allocated), 8-bit {int8PerParam:F4} (allocated), {reportedPerParam:F5} (StateBytes); expected 8 and {expected:F5}");
        Assert.True(Math.Abs(fp32PerParam - 8) < 0.02, $"fp32 AdamW allocated {fp32PerParam:F4} bytes/param, expected 8 (error {Math.Abs(fp32PerParam - 8):E3})");
        Assert.True(Math.Abs(int8PerParam - expected) < 0.02, $"AdamW8bit allocated {int8PerParam:F4} bytes/param, expected {expected:F5} (error {Math.Abs(int8PerParam - expected):E3})");
        Assert.True(Math.Abs(reportedPerParam - expected) < 1e-4, $"AdamW8bit reports {reportedPerParam:F5} bytes/param, expected {expected:F5} (error {Math.Abs(reportedPerParam - expected):E3})");
    }

    [Fact]
    public void WriteState_then_ReadState_continues_bit_exactly()
    {
        // An 8-bit tensor with a partial last block, a float32-moment tensor, and one that never gets a gradient.
        var big = new Quadratic(5_000, seed: 4);
        var small = new Quadratic(100, seed: 5);
        using var pBig = big.NewParameter();
        using var pSmall = small.NewParameter();
        using var pIdle = small.NewParameter();
        using var first = new AdamW8bit([pBig, pSmall, pIdle], learningRate: 0.01f);
        void Run(AdamW8bit opt, Tensor b, Tensor s, int steps)
        {
            for (int t = 0; t < steps; t++)
            {
                big.SetGradient(b);
                small.SetGradient(s);
                opt.Step();
            }
        }
        Run(first, pBig, pSmall, 5);
        var saved = new MemoryStream();
        using (var writer = new BinaryWriter(saved, System.Text.Encoding.UTF8, leaveOpen: true)) first.WriteState(writer);
        using var pBig2 = Tensor.FromArray(pBig.ToArray(), pBig.ShapeArray);
        using var pSmall2 = Tensor.FromArray(pSmall.ToArray(), pSmall.ShapeArray);
        using var pIdle2 = Tensor.FromArray(pIdle.ToArray(), pIdle.ShapeArray);
        pBig2.RequiresGrad = pSmall2.RequiresGrad = pIdle2.RequiresGrad = true;
        Run(first, pBig, pSmall, 5);

        using var resumed = new AdamW8bit([pBig2, pSmall2, pIdle2], learningRate: 0.01f);
        saved.Position = 0;
        using (var reader = new BinaryReader(saved)) resumed.ReadState(reader);
        Assert.Equal(5, resumed.StepCount);
        Run(resumed, pBig2, pSmall2, 5);

        var (mBig, worstBig) = Compare(pBig.ToArray(), pBig2.ToArray());
        var (mSmall, worstSmall) = Compare(pSmall.ToArray(), pSmall2.ToArray());
        Assert.True(mBig == 0 && mSmall == 0,
            $"after resuming, {mBig} 8-bit-state and {mSmall} fp32-state elements differ (largest |Δ| {Math.Max(worstBig, worstSmall):E3})");
        Assert.Equal(StateBytes(first), StateBytes(resumed));
    }

    [Fact]
    public void State_layout_and_bitsandbytes_sign_rule_for_tiny_negative_momentum()
    {
        const int n = AdamW8bit.MinElementsFor8Bit; // 16 blocks
        var p = Tensor.Zeros(n);
        p.RequiresGrad = true;
        using var adam8 = new AdamW8bit([p], weightDecay: 0f);
        var grad = new float[n];
        grad[0] = 1f;      // the block's largest: m/absmax = 1 → top code
        grad[1] = -1e-9f;  // m/absmax = −1e-9 rounds to the zero code, and bitsandbytes moves it to the smallest negative
        grad[2] = 1e-9f;   // the positive twin stays at zero
        p.Grad = Tensor.FromArray(grad, n);
        adam8.Step();
        p.Dispose();

        // WriteState: name, format, step, block size, 8-bit minimum, then per parameter: has-state, count and the
        // raw buffer absmax(m)[16] | absmax(v)[16] | codes(m)[n] | codes(v)[n].
        using var reader = new BinaryReader(new MemoryStream(StateBytes(adam8)));
        Assert.Equal("AdamW8bit", reader.ReadString());
        Assert.Equal(1, reader.ReadInt32());
        Assert.Equal(1, reader.ReadInt32());
        Assert.Equal(AdamW8bit.BlockSize, reader.ReadInt32());
        Assert.Equal(AdamW8bit.MinElementsFor8Bit, reader.ReadInt32());
        Assert.True(reader.ReadBoolean());
        Assert.Equal(n, reader.ReadInt64());
        int blocks = n / AdamW8bit.BlockSize;
        var absmaxM = Enumerable.Range(0, blocks).Select(_ => reader.ReadSingle()).ToArray();
        var absmaxV = Enumerable.Range(0, blocks).Select(_ => reader.ReadSingle()).ToArray();
        var codesM = reader.ReadBytes(n);
        var codesV = reader.ReadBytes(n);
        Assert.Equal(1f - 0.9f, absmaxM[0]);    // m = (1 − β1)·g, in float32
        Assert.Equal(1f - 0.999f, absmaxV[0]);  // v = (1 − β2)·g²
        Assert.All(absmaxM.Skip(1).Concat(absmaxV.Skip(1)), a => Assert.Equal(0f, a));
        Assert.Equal(255, codesM[0]);
        Assert.Equal(126, codesM[1]);
        Assert.Equal(127, codesM[2]);
        Assert.Equal(127, codesM[3]);
        Assert.Equal(255, codesV[0]);
        Assert.Equal(0, codesV[1]);
    }

    [Fact]
    public void ReadState_refuses_another_optimizers_state()
    {
        var problem = new Quadratic(10, seed: 6);
        using var p = problem.NewParameter();
        using var adam = new AdamW([p]);
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true)) adam.WriteState(writer);
        stream.Position = 0;
        using var adam8 = new AdamW8bit([p]);
        var e = Assert.Throws<InvalidDataException>(() => adam8.ReadState(new BinaryReader(stream)));
        Assert.Contains("'AdamW'", e.Message);
    }

    [Fact]
    public void Settings_out_of_range_are_refused_by_name()
    {
        var problem = new Quadratic(10, seed: 7);
        using var p = problem.NewParameter();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW8bit([p], beta2: 1f));
        Assert.Equal("beta2", e.ParamName);
        var frozen = Tensor.Zeros(3);
        Assert.Contains("does not require gradients", Assert.Throws<ArgumentException>(() => new AdamW8bit([frozen])).Message);
    }

    /// <summary>
    /// Runs both optimizers' first step once, on a tensor large enough for the kernels to fan out to threads, so
    /// measured steps do not include JIT or thread-pool start-up allocations.
    /// </summary>
    internal static void WarmUp(bool paged = false)
    {
        var problem = new Quadratic(1 << 17, seed: 0);
        using var p = problem.NewParameter();
        using var adam = new AdamW([p], paged: paged);
        using var adam8 = new AdamW8bit([p], paged: paged);
        problem.SetGradient(p);
        adam.Step();
        adam8.Step();
    }

    internal static (int Mismatches, double Worst) Compare(float[] expected, float[] actual)
    {
        int mismatches = 0;
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i])) mismatches++;
            worst = Math.Max(worst, Math.Abs((double)expected[i] - actual[i]));
        }
        return (mismatches, worst);
    }

    internal static byte[] StateBytes(IOptimizer optimizer)
    {
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream)) optimizer.WriteState(writer);
        return stream.ToArray();
    }
}

/// <summary>Runs that change <see cref="CpuParallel.MaxThreads"/> must not overlap the kernel tests that do too.</summary>
[Collection("CpuThreads")]
public class AdamW8bitThreadingTests
{
    [Fact]
    public void Result_does_not_depend_on_the_thread_count()
    {
        var problem = new Quadratic(50_000, seed: 8);
        using var serial = problem.NewParameter();
        using var parallel = problem.NewParameter();
        using var serialOpt = new AdamW8bit([serial], learningRate: 0.01f);
        using var parallelOpt = new AdamW8bit([parallel], learningRate: 0.01f);
        int threads = CpuParallel.MaxThreads;
        try
        {
            for (int t = 0; t < 5; t++)
            {
                CpuParallel.MaxThreads = 1;
                problem.SetGradient(serial);
                serialOpt.Step();
                CpuParallel.MaxThreads = Math.Max(4, threads);
                problem.SetGradient(parallel);
                parallelOpt.Step();
            }
        }
        finally
        {
            CpuParallel.MaxThreads = threads;
        }
        var (mismatches, worst) = AdamW8bitTests.Compare(serial.ToArray(), parallel.ToArray());
        Assert.True(mismatches == 0, $"{mismatches} elements differ between 1 and many threads, largest |Δ| = {worst:E3}");
    }
}

/// <summary>
/// Loss ½ Σ aᵢ (pᵢ − tᵢ)² with curvatures aᵢ in [0.5, 2] and gradient aᵢ (pᵢ − tᵢ), computed directly so both
/// optimizers see exactly the same gradients. With starts and targets in [-1, 1] the gradients inside a block
/// still span orders of magnitude, and shrink toward 0 as parameters converge.
/// </summary>
/// <remarks>
/// A wider curvature range (0.1..10) puts some gradients below 4e-4 of their block's largest: their v/absmax
/// falls under half the unsigned map's smallest step and rounds to 0 while m survives, so once their gradient
/// shrinks the next update is many times lr. That is a property of bitsandbytes' scheme, which AdamW8bit
/// reproduces (see its remarks), so the tracking test uses the milder spread.
/// </remarks>
internal sealed class Quadratic
{
    private readonly float[] _curvature;
    private readonly float[] _target;

    public Quadratic(int count, int seed)
    {
        var random = new Random(seed);
        _curvature = new float[count];
        _target = new float[count];
        Start = new float[count];
        for (int i = 0; i < count; i++)
        {
            _curvature[i] = (float)Math.Pow(2, random.NextDouble() * 2 - 1);
            _target[i] = (float)(random.NextDouble() * 2 - 1);
            Start[i] = (float)(random.NextDouble() * 2 - 1);
        }
    }

    public float[] Start { get; }

    public Tensor NewParameter()
    {
        var p = Tensor.FromArray(Start, Start.Length);
        p.RequiresGrad = true;
        return p;
    }

    public void SetGradient(Tensor p)
    {
        var grad = Tensor.Create(p.ShapeArray, DType.Float32, zeroed: false, scoped: false);
        var g = grad.AsSpan();
        var x = p.AsSpan();
        for (int i = 0; i < g.Length; i++) g[i] = _curvature[i] * (x[i] - _target[i]);
        p.ZeroGrad();
        p.Grad = grad;
    }

    public double Loss(Tensor p)
    {
        var x = p.ToArray();
        double sum = 0;
        for (int i = 0; i < x.Length; i++) sum += 0.5 * _curvature[i] * Math.Pow(x[i] - _target[i], 2);
        return sum;
    }
}
