using System.Runtime.Intrinsics;
using PeftGen.Backends.Cpu.Kernels;
using Xunit;

namespace PeftGen.Tests.Cpu;

public unsafe class SoftmaxKernelTests
{
    private static double[] Reference(double[] x, int rows, int cols)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int c = 0; c < cols; c++) max = Math.Max(max, x[r * cols + c]);
            for (int c = 0; c < cols; c++) sum += y[r * cols + c] = Math.Exp(x[r * cols + c] - max);
            for (int c = 0; c < cols; c++) y[r * cols + c] /= sum;
        }
        return y;
    }

    [Theory]
    [InlineData(3, 1)]
    [InlineData(5, 7)]
    [InlineData(4, 61)]
    [InlineData(2, 300)]
    [InlineData(40, 1000)]
    public void ForwardMatchesReference(int rows, int cols)
    {
        var rng = new Random(rows * 1000 + cols);
        var x = KernelCheck.Random(rng, rows * cols, 6);
        var y = new float[x.Length];
        fixed (float* px = x, py = y) SoftmaxKernel.Forward(px, py, rows, cols);
        KernelCheck.Close(y, Reference(KernelCheck.ToDouble(x), rows, cols), 2e-6, "softmax");

        // In place gives the same bits.
        fixed (float* px = x) SoftmaxKernel.Forward(px, px, rows, cols);
        Assert.Equal(y, x);
    }

    [Fact]
    public void ForwardIsStableForHugeLogits()
    {
        var x = new float[] { 1000f, 999f, -1000f, 3e38f, 3e38f, 0f };
        var y = new float[x.Length];
        fixed (float* px = x, py = y) SoftmaxKernel.Forward(px, py, 2, 3);
        var expected = Reference(KernelCheck.ToDouble(x), 2, 3);
        KernelCheck.Close(y, expected, 1e-6, "softmax of huge logits");
    }

    [Theory]
    [InlineData(3, 7, false)]
    [InlineData(4, 61, true)]
    [InlineData(2, 130, false)]
    public void BackwardMatchesReferenceAndFiniteDifferences(int rows, int cols, bool accumulate)
    {
        var rng = new Random(rows + 17 * cols);
        var x = KernelCheck.Random(rng, rows * cols, 3);
        var dy = KernelCheck.Random(rng, rows * cols);
        var y = new float[x.Length];
        var dx = KernelCheck.Random(rng, rows * cols);
        var before = KernelCheck.ToDouble(dx);
        fixed (float* px = x, pdy = dy, py = y, pdx = dx)
        {
            SoftmaxKernel.Forward(px, py, rows, cols);
            SoftmaxKernel.Backward(pdy, py, pdx, rows, cols, accumulate);
        }

        var yd = Reference(KernelCheck.ToDouble(x), rows, cols);
        var expected = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double dot = 0;
            for (int c = 0; c < cols; c++) dot += dy[r * cols + c] * yd[r * cols + c];
            for (int c = 0; c < cols; c++)
            {
                int i = r * cols + c;
                expected[i] = yd[i] * (dy[i] - dot) + (accumulate ? before[i] : 0);
            }
        }
        KernelCheck.Close(dx, expected, 1e-6, "softmax dx");

        if (accumulate) for (int i = 0; i < dx.Length; i++) dx[i] -= (float)before[i];
        var dyd = KernelCheck.ToDouble(dy);
        KernelCheck.FiniteDifference(xd => KernelCheck.Dot(dyd, Reference(xd, rows, cols)), KernelCheck.ToDouble(x), dx, 1e-5, "softmax dx");
    }

    [Fact]
    public void VectorExpIsAccurate()
    {
        var rng = new Random(3);
        double maxRel = 0;
        for (int trial = 0; trial < 20000; trial++)
        {
            float x = (float)(rng.NextDouble() * 175 - 86.4);
            double expected = Math.Exp(x);
            float e512 = SoftmaxKernel.Exp(Vector512.Create(x)).GetElement(0);
            float e256 = SoftmaxKernel.Exp(Vector256.Create(x)).GetElement(0);
            maxRel = Math.Max(maxRel, Math.Max(Math.Abs(e512 - expected), Math.Abs(e256 - expected)) / expected);
        }
        Assert.True(maxRel < 3e-7, $"max relative err {maxRel}");

        float[] edges = [float.NegativeInfinity, -1000f, 0f, 1000f, float.PositiveInfinity, float.NaN];
        float[] expectedEdges = [0f, 0f, 1f, float.PositiveInfinity, float.PositiveInfinity, float.NaN];
        for (int i = 0; i < edges.Length; i++)
        {
            Assert.Equal(expectedEdges[i], SoftmaxKernel.Exp(Vector512.Create(edges[i])).GetElement(0));
            Assert.Equal(expectedEdges[i], SoftmaxKernel.Exp(Vector256.Create(edges[i])).GetElement(0));
        }
    }
}
