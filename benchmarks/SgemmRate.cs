using System.Diagnostics;
using System.Runtime.InteropServices;
using PeftGen.Backends.Cpu;

namespace PeftGen.Benchmarks;

/// <summary>The machine's SGEMM rate as our kernel reaches it at n³ (the yardstick training utilisation is read against).</summary>
internal static unsafe class SgemmRate
{
    /// <summary>Best GFLOP/s of C = A·B at n × n × n over about <paramref name="seconds"/>, after two warm-up calls.</summary>
    public static double Measure(int n = 2048, double seconds = 1.5)
    {
        long count = (long)n * n;
        var a = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        var b = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        var c = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        try
        {
            var random = new Random(1);
            for (long i = 0; i < count; i++) (a[i], b[i]) = ((float)random.NextDouble() - 0.5f, (float)random.NextDouble() - 0.5f);
            double best = double.MaxValue, spent = 0;
            for (int call = 0; call < 3 || spent < seconds; call++)
            {
                long start = Stopwatch.GetTimestamp();
                Sgemm.Multiply(false, false, n, n, n, 1f, a, n, b, n, 0f, c, n);
                double elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
                if (call >= 2) best = Math.Min(best, elapsed); // the first two warm up (JIT, pack buffers, page faults)
                spent += elapsed;
            }
            return 2.0 * n * n * n / best / 1e9;
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(b);
            NativeMemory.AlignedFree(c);
        }
    }
}
