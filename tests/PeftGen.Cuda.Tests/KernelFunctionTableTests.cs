using PeftGen.Backends.Cuda;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>The context's module and kernel caches under concurrent first use (test classes launch in parallel).</summary>
public sealed class KernelFunctionTableTests
{
    [Fact]
    public void Threads_asking_at_once_load_each_module_once_and_look_each_kernel_up_once()
    {
        var moduleLoads = new int[Enum.GetValues<CudaModule>().Length];
        int lookups = 0;
        var table = new KernelFunctionTable<CudaModule>(
            module =>
            {
                Interlocked.Increment(ref moduleLoads[(int)module]);
                Thread.Sleep(5); // a compile takes a while: the window in which an unlocked cache loads twice
                return (IntPtr)(1000 * ((int)module + 1));
            },
            (module, name) =>
            {
                Interlocked.Increment(ref lookups);
                return module + name.Length;
            });
        var requests = Enum.GetValues<CudaModule>().SelectMany(m => CudaKernelSources.KernelNames(m).Select(n => (Module: m, Name: n))).ToList();
        using var start = new Barrier(8);
        var results = new IntPtr[8][];
        var threads = Enumerable.Range(0, 8).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            results[t] = requests.Select(r => table.Get(r.Module, r.Name)).ToArray();
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        Assert.All(moduleLoads, count => Assert.Equal(1, count));
        Assert.Equal(requests.Count, lookups);
        Assert.All(results, r => Assert.Equal(results[0], r));
        Assert.Equal(Enum.GetValues<CudaModule>().Length, table.LoadedModules.Count);
    }
}
