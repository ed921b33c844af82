using PeftGen.Backends.Cpu.Kernels;
using Xunit;

namespace PeftGen.Tests.Cpu;

public unsafe class CrossEntropyKernelTests
{
    private const int Ignore = -100;

    // Per-row (loss, lse) in double; ignored rows have loss 0.
    private static (double[] Losses, double[] Lse) Reference(double[] logits, int[] targets, int n, int v)
    {
        var losses = new double[n];
        var lse = new double[n];
        for (int r = 0; r < n; r++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int c = 0; c < v; c++) max = Math.Max(max, logits[r * v + c]);
            for (int c = 0; c < v; c++) sum += Math.Exp(logits[r * v + c] - max);
            lse[r] = max + Math.Log(sum);
            losses[r] = targets[r] == Ignore ? 0 : lse[r] - logits[r * v + targets[r]];
        }
        return (losses, lse);
    }

    private static int[] Targets(Random rng, int n, int v) =>
        Enumerable.Range(0, n).Select(r => r % 3 == 1 ? Ignore : rng.Next(v)).ToArray();

    [Theory]
    [InlineData(7, 5)]
    [InlineData(6, 61)]
    [InlineData(5, 1000)]
    public void ForwardMatchesReference(int n, int v)
    {
        var rng = new Random(n * 31 + v);
        var logits = KernelCheck.Random(rng, n * v, 8);
        var targets = Targets(rng, n, v);
        var losses = new float[n];
        var lse = new float[n];
        fixed (float* pl = logits, ploss = losses, plse = lse)
        fixed (int* pt = targets)
        {
            CrossEntropyKernel.Forward(pl, pt, ploss, plse, n, v, Ignore);
        }
        var (refLosses, refLse) = Reference(KernelCheck.ToDouble(logits), targets, n, v);
        KernelCheck.Close(losses, refLosses, 1e-5, "cross-entropy losses");
        KernelCheck.Close(lse, refLse, 1e-5, "cross-entropy lse");
        for (int r = 0; r < n; r++) if (targets[r] == Ignore) Assert.Equal(0f, losses[r]);
    }

    [Theory]
    [InlineData(7, 5, 1f)]
    [InlineData(6, 61, 0.37f)]
    [InlineData(5, 32000, 0.25f)]
    public void ForwardWithGradientEqualsForwardThenBackwardInPlace(int n, int v, float gradScale)
    {
        var rng = new Random(n * 13 + v);
        var logits = KernelCheck.Random(rng, n * v, 6);
        var targets = Targets(rng, n, v);
        var (refLosses, refLse) = Reference(KernelCheck.ToDouble(logits), targets, n, v);
        var reference = new double[n * v];                                                  // gradScale · (softmax − onehot)
        for (int r = 0; r < n; r++)
            for (int c = 0; c < v; c++)
                reference[r * v + c] = targets[r] == Ignore ? 0 : gradScale * (Math.Exp(logits[r * v + c] - refLse[r]) - (c == targets[r] ? 1 : 0));
        var losses = new float[n];
        fixed (float* pl = logits, ploss = losses)
        fixed (int* pt = targets)
        {
            CrossEntropyKernel.ForwardWithGradient(pl, pt, ploss, n, v, Ignore, gradScale);
        }
        KernelCheck.Close(losses, refLosses, 1e-5, "fused cross-entropy losses");
        KernelCheck.Close(logits, reference, 1e-5, "fused cross-entropy gradient (in place)");
    }

    [Theory]
    [InlineData(7, 5, 1f)]
    [InlineData(6, 61, 0.37f)]
    [InlineData(4, 300, 0.25f)]
    public void BackwardMatchesReferenceAndFiniteDifferences(int n, int v, float gradScale)
    {
        var rng = new Random(n * 7 + v);
        var logits = KernelCheck.Random(rng, n * v, 4);
        var targets = Targets(rng, n, v);
        var losses = new float[n];
        var lse = new float[n];
        var grad = new float[n * v];
        fixed (float* pl = logits, ploss = losses, plse = lse, pg = grad)
        fixed (int* pt = targets)
        {
            CrossEntropyKernel.Forward(pl, pt, ploss, plse, n, v, Ignore);
            CrossEntropyKernel.Backward(pl, plse, pt, pg, n, v, Ignore, gradScale);
        }

        var logitsD = KernelCheck.ToDouble(logits);
        var refLse = Reference(logitsD, targets, n, v).Lse;
        var expected = new double[n * v];
        for (int r = 0; r < n; r++)
        {
            if (targets[r] == Ignore) continue;
            for (int c = 0; c < v; c++)
                expected[r * v + c] = gradScale * (Math.Exp(logitsD[r * v + c] - refLse[r]) - (c == targets[r] ? 1 : 0));
        }
        KernelCheck.Close(grad, expected, 1e-6, "cross-entropy dlogits");
        for (int r = 0; r < n; r++)
            if (targets[r] == Ignore) Assert.All(grad.Skip(r * v).Take(v), g => Assert.Equal(0f, g));

        KernelCheck.FiniteDifference(x => gradScale * Reference(x, targets, n, v).Losses.Sum(), logitsD, grad, 1e-6, "cross-entropy dlogits", maxCoords: 60);
    }

    [Fact]
    public void BackwardInPlaceMatchesSeparateBuffer()
    {
        int n = 5, v = 77;
        var rng = new Random(5);
        var logits = KernelCheck.Random(rng, n * v, 6);
        var targets = Targets(rng, n, v);
        var losses = new float[n];
        var lse = new float[n];
        var grad = new float[n * v];
        fixed (float* pl = logits, ploss = losses, plse = lse, pg = grad)
        fixed (int* pt = targets)
        {
            CrossEntropyKernel.Forward(pl, pt, ploss, plse, n, v, Ignore);
            CrossEntropyKernel.Backward(pl, plse, pt, pg, n, v, Ignore, 0.5f);
            CrossEntropyKernel.Backward(pl, plse, pt, pl, n, v, Ignore, 0.5f);
        }
        Assert.Equal(grad, logits);
    }

    [Fact]
    public void OutOfRangeTargetThrowsNamingRowAndValue()
    {
        int n = 4, v = 10;
        var logits = new float[n * v];
        var losses = new float[n];
        var lse = new float[n];
        foreach (int bad in new[] { 10, -1 })
        {
            var targets = new[] { 0, Ignore, 9, bad };
            var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            {
                fixed (float* pl = logits, ploss = losses, plse = lse)
                fixed (int* pt = targets)
                {
                    CrossEntropyKernel.Forward(pl, pt, ploss, plse, n, v, Ignore);
                }
            });
            Assert.Contains($"targets[3] = {bad}", ex.Message);
            Assert.Throws<ArgumentOutOfRangeException>(() =>
            {
                fixed (float* pl = logits, plse = lse)
                fixed (int* pt = targets)
                {
                    CrossEntropyKernel.Backward(pl, plse, pt, pl, n, v, Ignore, 1f);
                }
            });
        }
    }
}
