using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cpu.Kernels;
using Xunit;

namespace PeftGen.Tests.Cpu;

/// <summary>Tests that change <see cref="CpuParallel.MaxThreads"/> run alone, after the parallel ones.</summary>
[CollectionDefinition("CpuThreads", DisableParallelization = true)]
public sealed class CpuThreadsCollection;

/// <summary>Random inputs, double-precision comparisons and finite differences shared by the kernel tests.</summary>
internal static class KernelCheck
{
    public static float[] Random(Random rng, int count, float scale = 1f)
    {
        var a = new float[count];
        for (int i = 0; i < count; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    public static double[] ToDouble(float[] a) => Array.ConvertAll(a, x => (double)x);

    /// <summary>
    /// Largest |actual − expected| / max(1, |expected|): absolute for values up to 1, relative above.
    /// NaN anywhere makes it NaN, so the assertion fails.
    /// </summary>
    public static double MaxErr(float[] actual, double[] expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double max = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double err = actual[i] == expected[i] ? 0 : Math.Abs(actual[i] - expected[i]) / Math.Max(1, Math.Abs(expected[i]));
            max = Math.Max(max, err);
        }
        return max;
    }

    public static void Close(float[] actual, double[] expected, double tol, string what)
    {
        double err = MaxErr(actual, expected);
        Assert.True(err <= tol, $"{what}: max err {err} (tol {tol})");
    }

    /// <summary>
    /// Compares analytic gradients with central differences of the double-precision scalar function f at up
    /// to maxCoords evenly spaced coordinates of x; the error is |fd − analytic| / max(1, |fd|).
    /// </summary>
    public static void FiniteDifference(Func<double[], double> f, double[] x, float[] analytic, double tol, string what, int maxCoords = 40)
    {
        Assert.Equal(x.Length, analytic.Length);
        const double h = 1e-4;
        int step = Math.Max(1, x.Length / maxCoords);
        double max = 0;
        for (int i = 0; i < x.Length; i += step)
        {
            double saved = x[i];
            x[i] = saved + h;
            double plus = f(x);
            x[i] = saved - h;
            double minus = f(x);
            x[i] = saved;
            double fd = (plus - minus) / (2 * h);
            max = Math.Max(max, Math.Abs(fd - analytic[i]) / Math.Max(1, Math.Abs(fd)));
        }
        Assert.True(max <= tol, $"{what}: max finite-difference err {max} (tol {tol})");
    }

    public static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}

/// <summary>Every kernel gives bit-identical results on one thread and on two.</summary>
[Collection("CpuThreads")]
public unsafe class ThreadCountKernelTests
{
    [Fact]
    public void AllKernelsAreIndependentOfThreadCount()
    {
        int saved = CpuParallel.MaxThreads;
        try
        {
            CpuParallel.MaxThreads = 1;
            var single = RunAll();
            CpuParallel.MaxThreads = 2;
            var dual = RunAll();
            Assert.Equal(single.Count, dual.Count);
            foreach (var (name, values) in single)
            {
                int mismatches = values.Where((x, i) => BitConverter.SingleToInt32Bits(x) != BitConverter.SingleToInt32Bits(dual[name][i])).Count();
                Assert.True(mismatches == 0, $"{name}: {mismatches} of {values.Length} values differ between 1 and 2 threads");
            }
        }
        finally
        {
            CpuParallel.MaxThreads = saved;
        }
    }

    // Sizes are chosen so each kernel splits into several parallel tasks.
    private static Dictionary<string, float[]> RunAll()
    {
        var rng = new Random(7);
        var results = new Dictionary<string, float[]>();

        {
            int rows = 64, cols = 1000;
            var x = KernelCheck.Random(rng, rows * cols, 4);
            var dy = KernelCheck.Random(rng, rows * cols);
            var y = new float[rows * cols];
            var dx = new float[rows * cols];
            fixed (float* px = x, pdy = dy, py = y, pdx = dx)
            {
                SoftmaxKernel.Forward(px, py, rows, cols);
                SoftmaxKernel.Backward(pdy, py, pdx, rows, cols, accumulate: false);
            }
            results["softmax y"] = y;
            results["softmax dx"] = dx;
        }
        {
            int n = 64, v = 1000;
            var logits = KernelCheck.Random(rng, n * v, 5);
            var targets = Enumerable.Range(0, n).Select(i => i % 9 == 0 ? -100 : rng.Next(v)).ToArray();
            var losses = new float[n];
            var lse = new float[n];
            var grad = new float[n * v];
            fixed (float* pl = logits, ploss = losses, plse = lse, pg = grad)
            fixed (int* pt = targets)
            {
                CrossEntropyKernel.Forward(pl, pt, ploss, plse, n, v, -100);
                CrossEntropyKernel.Backward(pl, plse, pt, pg, n, v, -100, 1f / n);
            }
            results["ce losses"] = losses;
            results["ce dlogits"] = grad;
        }
        {
            int n = 300, c = 72;
            var x = KernelCheck.Random(rng, n * c, 2);
            var w = KernelCheck.Random(rng, c);
            var dy = KernelCheck.Random(rng, n * c);
            var y = new float[n * c];
            var rstd = new float[n];
            var dx = new float[n * c];
            var dw = new float[c];
            fixed (float* px = x, pw = w, pdy = dy, py = y, pr = rstd, pdx = dx, pdw = dw)
            {
                RmsNormKernel.Forward(px, pw, py, pr, n, c, 1e-5f);
                RmsNormKernel.Backward(pdy, px, pw, pr, pdx, pdw, n, c, accumulateDx: false);
            }
            results["rmsnorm y"] = y;
            results["rmsnorm dx"] = dx;
            results["rmsnorm dw"] = dw;
        }
        {
            int count = 40000;
            var g = KernelCheck.Random(rng, count, 6);
            var u = KernelCheck.Random(rng, count);
            var dy = KernelCheck.Random(rng, count);
            var y = new float[count];
            var dg = new float[count];
            var du = new float[count];
            fixed (float* pg = g, pu = u, pdy = dy, py = y, pdg = dg, pdu = du)
            {
                SwiGluKernel.Forward(pg, pu, py, count);
                SwiGluKernel.Backward(pdy, pg, pu, pdg, pdu, count, accumulate: false);
            }
            results["swiglu y"] = y;
            results["swiglu dgate"] = dg;
            results["swiglu dup"] = du;
        }
        {
            int b = 2, t = 64, h = 4, d = 16;
            var x = KernelCheck.Random(rng, b * t * h * d);
            var y = new float[x.Length];
            fixed (float* px = x, py = y) RopeKernel.Apply(px, py, b, t, h, d, 3, 10000f, interleaved: true, inverse: false);
            results["rope"] = y;
        }
        {
            int b = 2, tq = 40, tk = 40, hq = 4, hkv = 2, d = 16;
            var q = KernelCheck.Random(rng, b * tq * hq * d);
            var k = KernelCheck.Random(rng, b * tk * hkv * d);
            var v = KernelCheck.Random(rng, b * tk * hkv * d);
            var dout = KernelCheck.Random(rng, q.Length);
            var o = new float[q.Length];
            var lse = new float[b * hq * tq];
            var dq = new float[q.Length];
            var dk = new float[k.Length];
            var dv = new float[v.Length];
            fixed (float* pq = q, pk = k, pv = v, pdo = dout, po = o, plse = lse, pdq = dq, pdk = dk, pdv = dv)
            {
                AttentionKernel.Forward(pq, pk, pv, po, plse, b, tq, tk, tk, hq, hkv, d, 0.25f);
                AttentionKernel.Backward(pdo, pq, pk, pv, po, plse, pdq, pdk, pdv, b, tq, tk, tk, hq, hkv, d, 0.25f);
            }
            results["attention out"] = o;
            results["attention dq"] = dq;
            results["attention dk"] = dk;
            results["attention dv"] = dv;
        }
        return results;
    }
}
