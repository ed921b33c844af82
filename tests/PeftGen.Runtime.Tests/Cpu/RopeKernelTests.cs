using PeftGen.Backends.Cpu.Kernels;
using Xunit;

namespace PeftGen.Tests.Cpu;

public unsafe class RopeKernelTests
{
    // Angles exactly as the contract computes them (float32 freq and angle), cos/sin in double.
    private static double[] Reference(double[] x, int b, int t, int h, int d, int offset, float theta, bool interleaved, bool inverse)
    {
        var y = new double[x.Length];
        int half = d / 2;
        for (int bi = 0; bi < b; bi++)
        for (int ti = 0; ti < t; ti++)
        for (int hi = 0; hi < h; hi++)
        {
            int o = ((bi * t + ti) * h + hi) * d;
            for (int i = 0; i < half; i++)
            {
                float freq = 1f / MathF.Pow(theta, 2 * i / (float)d);
                float angle = (offset + ti) * freq;
                double c = Math.Cos(angle), s = inverse ? -Math.Sin(angle) : Math.Sin(angle);
                int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
                y[o + i0] = x[o + i0] * c - x[o + i1] * s;
                y[o + i1] = x[o + i1] * c + x[o + i0] * s;
            }
        }
        return y;
    }

    public static TheoryData<int, int, int, int, int, bool> Shapes => new()
    {
        // b, t, h, d, positionOffset, interleaved
        { 2, 5, 3, 8, 0, true },
        { 2, 5, 3, 8, 0, false },
        { 1, 4, 2, 48, 7, true },
        { 1, 4, 2, 48, 7, false },
        { 2, 3, 1, 64, 1000, true },
        { 2, 3, 1, 64, 1000, false },
        { 1, 2, 2, 2, 3, false },
        { 1, 3, 2, 36, 0, true },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ForwardMatchesReferenceAndInPlace(int b, int t, int h, int d, int offset, bool interleaved)
    {
        var rng = new Random(b * 1000 + t * 100 + d + offset);
        var x = KernelCheck.Random(rng, b * t * h * d, 2);
        var y = new float[x.Length];
        fixed (float* px = x, py = y) RopeKernel.Apply(px, py, b, t, h, d, offset, 10000f, interleaved, inverse: false);
        KernelCheck.Close(y, Reference(KernelCheck.ToDouble(x), b, t, h, d, offset, 10000f, interleaved, inverse: false), 2e-6, "rope y");

        var inPlace = (float[])x.Clone();
        fixed (float* p = inPlace) RopeKernel.Apply(p, p, b, t, h, d, offset, 10000f, interleaved, inverse: false);
        Assert.Equal(y, inPlace);

        // The inverse undoes the rotation.
        fixed (float* p = inPlace) RopeKernel.Apply(p, p, b, t, h, d, offset, 10000f, interleaved, inverse: true);
        KernelCheck.Close(inPlace, KernelCheck.ToDouble(x), 2e-6, "rope inverse(rope(x))");
    }

    [Fact]
    public void RotatesTheExpectedPairsByTheExpectedAngle()
    {
        // d = 4, theta = 100: pair 0 turns by position · 1, pair 1 by position · 0.1.
        float[] x = [1, 2, 3, 4];
        var meta = new float[4];
        var hf = new float[4];
        fixed (float* px = x, pm = meta, ph = hf)
        {
            RopeKernel.Apply(px, pm, 1, 1, 1, 4, 2, 100f, interleaved: true, inverse: false);
            RopeKernel.Apply(px, ph, 1, 1, 1, 4, 2, 100f, interleaved: false, inverse: false);
        }
        double c0 = Math.Cos(2), s0 = Math.Sin(2), c1 = Math.Cos(0.2f), s1 = Math.Sin(0.2f);
        KernelCheck.Close(meta, [1 * c0 - 2 * s0, 1 * s0 + 2 * c0, 3 * c1 - 4 * s1, 3 * s1 + 4 * c1], 1e-6, "interleaved pairs (0,1), (2,3)");
        KernelCheck.Close(hf, [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 1 * s0 + 3 * c0, 2 * s1 + 4 * c1], 1e-6, "rotate-half pairs (0,2), (1,3)");
    }

    [Theory]
    [InlineData(2, 3, 2, 8, 5, true)]
    [InlineData(2, 3, 2, 8, 5, false)]
    [InlineData(1, 2, 3, 48, 0, true)]
    [InlineData(1, 2, 1, 64, 11, false)]
    public void InverseIsTheBackward(int b, int t, int h, int d, int offset, bool interleaved)
    {
        const float theta = 500000f;
        var rng = new Random(d * 3 + t);
        var x = KernelCheck.Random(rng, b * t * h * d);
        var dy = KernelCheck.Random(rng, x.Length);
        var dx = new float[x.Length];
        fixed (float* pdy = dy, pdx = dx) RopeKernel.Apply(pdy, pdx, b, t, h, d, offset, theta, interleaved, inverse: true);

        // Analytic: dx = Rᵀ dy, the transpose of the forward's (linear) map, built column by column.
        var xd = KernelCheck.ToDouble(x);
        var dyd = KernelCheck.ToDouble(dy);
        var expected = new double[x.Length];
        var basis = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            basis[i] = 1;
            expected[i] = KernelCheck.Dot(dyd, Reference(basis, b, t, h, d, offset, theta, interleaved, inverse: false));
            basis[i] = 0;
        }
        KernelCheck.Close(dx, expected, 2e-6, "rope dx");
        KernelCheck.FiniteDifference(xv => KernelCheck.Dot(dyd, Reference(xv, b, t, h, d, offset, theta, interleaved, inverse: false)), xd, dx, 1e-5, "rope dx");
    }
}
