using PeftGen.Backends.Cpu.Kernels;
using Xunit;

namespace PeftGen.Tests.Cpu;

public unsafe class RmsNormKernelTests
{
    private const float Eps = 1e-5f;

    private static (double[] Y, double[] Rstd) Reference(double[] x, double[] w, int n, int c)
    {
        var y = new double[n * c];
        var rstd = new double[n];
        for (int r = 0; r < n; r++)
        {
            double ss = 0;
            for (int i = 0; i < c; i++) ss += x[r * c + i] * x[r * c + i];
            rstd[r] = 1 / Math.Sqrt(ss / c + Eps);
            for (int i = 0; i < c; i++) y[r * c + i] = x[r * c + i] * rstd[r] * w[i];
        }
        return (y, rstd);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(5, 61)]
    [InlineData(4, 288)]
    public void ForwardMatchesReference(int n, int c)
    {
        var rng = new Random(n * 100 + c);
        var x = KernelCheck.Random(rng, n * c, 3);
        var w = KernelCheck.Random(rng, c, 2);
        var y = new float[n * c];
        var rstd = new float[n];
        fixed (float* px = x, pw = w, py = y, pr = rstd) RmsNormKernel.Forward(px, pw, py, pr, n, c, Eps);
        var (refY, refRstd) = Reference(KernelCheck.ToDouble(x), KernelCheck.ToDouble(w), n, c);
        KernelCheck.Close(y, refY, 5e-6, "rmsnorm y");
        KernelCheck.Close(rstd, refRstd, 5e-6, "rmsnorm rstd");
    }

    [Theory]
    [InlineData(3, 7, false)]
    [InlineData(5, 61, true)]
    [InlineData(100, 24, false)] // several dw chunks
    [InlineData(2, 288, true)]
    public void BackwardMatchesReferenceAndFiniteDifferences(int n, int c, bool accumulateDx)
    {
        var rng = new Random(n * 13 + c);
        var x = KernelCheck.Random(rng, n * c, 3);
        var w = KernelCheck.Random(rng, c, 2);
        var dy = KernelCheck.Random(rng, n * c);
        var y = new float[n * c];
        var rstd = new float[n];
        var dx = KernelCheck.Random(rng, n * c);
        var dw = KernelCheck.Random(rng, c); // dw always accumulates onto what is there
        var dxBefore = KernelCheck.ToDouble(dx);
        var dwBefore = KernelCheck.ToDouble(dw);
        fixed (float* px = x, pw = w, pdy = dy, py = y, pr = rstd, pdx = dx, pdw = dw)
        {
            RmsNormKernel.Forward(px, pw, py, pr, n, c, Eps);
            RmsNormKernel.Backward(pdy, px, pw, pr, pdx, pdw, n, c, accumulateDx);
        }

        // Analytic: dx = r (dy ∘ w) − r³/c (Σ dy ∘ w ∘ x) x, dw = Σ_rows dy ∘ x r.
        var xd = KernelCheck.ToDouble(x);
        var wd = KernelCheck.ToDouble(w);
        var rd = Reference(xd, wd, n, c).Rstd;
        var expectedDx = new double[n * c];
        var expectedDw = (double[])dwBefore.Clone();
        for (int r = 0; r < n; r++)
        {
            double dot = 0;
            for (int i = 0; i < c; i++) dot += dy[r * c + i] * wd[i] * xd[r * c + i];
            for (int i = 0; i < c; i++)
            {
                int k = r * c + i;
                expectedDx[k] = rd[r] * dy[k] * wd[i] - rd[r] * rd[r] * rd[r] * dot / c * xd[k] + (accumulateDx ? dxBefore[k] : 0);
                expectedDw[i] += dy[k] * xd[k] * rd[r];
            }
        }
        KernelCheck.Close(dx, expectedDx, 2e-5, "rmsnorm dx");
        KernelCheck.Close(dw, expectedDw, 2e-5, "rmsnorm dw");

        if (accumulateDx) for (int i = 0; i < dx.Length; i++) dx[i] -= (float)dxBefore[i];
        for (int i = 0; i < c; i++) dw[i] -= (float)dwBefore[i];
        var dyd = KernelCheck.ToDouble(dy);
        KernelCheck.FiniteDifference(xv => KernelCheck.Dot(dyd, Reference(xv, wd, n, c).Y), xd, dx, 1e-4, "rmsnorm dx");
        KernelCheck.FiniteDifference(wv => KernelCheck.Dot(dyd, Reference(xd, wv, n, c).Y), wd, dw, 1e-4, "rmsnorm dw");
    }

    [Fact]
    public void BackwardWithFrozenWeightSkipsDw()
    {
        int n = 40, c = 33;
        var rng = new Random(2);
        var x = KernelCheck.Random(rng, n * c);
        var w = KernelCheck.Random(rng, c);
        var dy = KernelCheck.Random(rng, n * c);
        var y = new float[n * c];
        var rstd = new float[n];
        var dxFrozen = new float[n * c];
        var dx = new float[n * c];
        var dw = new float[c];
        fixed (float* px = x, pw = w, pdy = dy, py = y, pr = rstd, pdxf = dxFrozen, pdx = dx, pdw = dw)
        {
            RmsNormKernel.Forward(px, pw, py, pr, n, c, Eps);
            RmsNormKernel.Backward(pdy, px, pw, pr, pdxf, null, n, c, accumulateDx: false);
            RmsNormKernel.Backward(pdy, px, pw, pr, pdx, pdw, n, c, accumulateDx: false);
        }
        Assert.Equal(dx, dxFrozen);
    }
}
