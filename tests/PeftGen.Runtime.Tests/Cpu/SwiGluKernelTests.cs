using PeftGen.Backends.Cpu.Kernels;
using Xunit;

namespace PeftGen.Tests.Cpu;

public unsafe class SwiGluKernelTests
{
    private static double Sigmoid(double g) => 1 / (1 + Math.Exp(-g));
    private static double Silu(double g) => g * Sigmoid(g);
    private static double SiluGrad(double g) => Sigmoid(g) * (1 + g * (1 - Sigmoid(g)));

    // Random values, with the extremes where sigmoid saturates or e^−g overflows mixed in.
    private static float[] Gates(Random rng, int count)
    {
        var g = KernelCheck.Random(rng, count, 6);
        float[] extremes = [-100f, -89f, -30f, 30f, 89f, 100f, 0f];
        for (int i = 0; i < Math.Min(count, extremes.Length); i++) g[(i * 7919) % count] = extremes[i];
        return g;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(61)]
    [InlineData(16384 + 37)] // more than one parallel block
    public void ForwardMatchesReference(int count)
    {
        var rng = new Random(count);
        var g = Gates(rng, count);
        var u = KernelCheck.Random(rng, count, 2);
        var y = new float[count];
        var silu = new float[count];
        fixed (float* pg = g, pu = u, py = y, ps = silu)
        {
            SwiGluKernel.Forward(pg, pu, py, count);
            SwiGluKernel.SiluForward(pg, ps, count);
        }
        // Relative to the magnitude: silu(g) ≈ g for large g.
        KernelCheck.Close(y, g.Select((x, i) => Silu(x) * u[i]).ToArray(), 2e-5, "swiglu y");
        KernelCheck.Close(silu, g.Select(x => Silu(x)).ToArray(), 2e-5, "silu y");

        // In place over the gate gives the same bits.
        fixed (float* pg = g, pu = u) SwiGluKernel.Forward(pg, pu, pg, count);
        Assert.Equal(y, g);
    }

    [Theory]
    [InlineData(7, false)]
    [InlineData(61, true)]
    [InlineData(16384 + 37, false)]
    public void BackwardMatchesReferenceAndFiniteDifferences(int count, bool accumulate)
    {
        var rng = new Random(count + 1);
        var g = Gates(rng, count);
        var u = KernelCheck.Random(rng, count, 2);
        var dy = KernelCheck.Random(rng, count);
        var dg = KernelCheck.Random(rng, count);
        var du = KernelCheck.Random(rng, count);
        var dx = KernelCheck.Random(rng, count);
        var dgBefore = KernelCheck.ToDouble(dg);
        var duBefore = KernelCheck.ToDouble(du);
        var dxBefore = KernelCheck.ToDouble(dx);
        fixed (float* pg = g, pu = u, pdy = dy, pdg = dg, pdu = du, pdx = dx)
        {
            SwiGluKernel.Backward(pdy, pg, pu, pdg, pdu, count, accumulate);
            SwiGluKernel.SiluBackward(pdy, pg, pdx, count, accumulate);
        }
        double keep = accumulate ? 1 : 0;
        KernelCheck.Close(dg, g.Select((x, i) => dy[i] * u[i] * SiluGrad(x) + keep * dgBefore[i]).ToArray(), 1e-5, "swiglu dgate");
        KernelCheck.Close(du, g.Select((x, i) => dy[i] * Silu(x) + keep * duBefore[i]).ToArray(), 1e-5, "swiglu dup");
        KernelCheck.Close(dx, g.Select((x, i) => dy[i] * SiluGrad(x) + keep * dxBefore[i]).ToArray(), 1e-5, "silu dx");

        for (int i = 0; i < count; i++)
        {
            dg[i] -= (float)(keep * dgBefore[i]);
            du[i] -= (float)(keep * duBefore[i]);
            dx[i] -= (float)(keep * dxBefore[i]);
        }
        var gd = KernelCheck.ToDouble(g);
        var ud = KernelCheck.ToDouble(u);
        var dyd = KernelCheck.ToDouble(dy);
        double SwiGlu(double[] gv, double[] uv) => Enumerable.Range(0, count).Sum(i => dyd[i] * Silu(gv[i]) * uv[i]);
        KernelCheck.FiniteDifference(gv => SwiGlu(gv, ud), gd, dg, 1e-5, "swiglu dgate");
        KernelCheck.FiniteDifference(uv => SwiGlu(gd, uv), ud, du, 1e-5, "swiglu dup");
        KernelCheck.FiniteDifference(xv => Enumerable.Range(0, count).Sum(i => dyd[i] * Silu(xv[i])), gd, dx, 1e-5, "silu dx");
    }
}
