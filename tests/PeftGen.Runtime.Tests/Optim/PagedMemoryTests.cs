using PeftGen.Optim;
using PeftGen.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Optim;

/// <summary>These tests count this process's paged-state files, so no other paged test may run beside them.</summary>
[CollectionDefinition("PagedMemory", DisableParallelization = true)]
public sealed class PagedMemoryCollection;

[Collection("PagedMemory")]
public class PagedMemoryTests(ITestOutputHelper output)
{
    [Fact]
    public void Zeros_is_a_zero_filled_writable_tensor_on_a_file_that_dispose_deletes()
    {
        long liveBefore = PagedMemory.LiveBytes;
        var t = PagedMemory.Zeros([3, 1000]);
        var storage = Assert.IsType<MappedStorage>(t.Storage);
        Assert.True(File.Exists(storage.FilePath), $"{storage.FilePath} should exist while the tensor is alive");
        Assert.Equal(12_000, PagedMemory.LiveBytes - liveBefore);
        var span = t.AsSpan();
        float largest = 0;
        foreach (float v in span) largest = MathF.Max(largest, MathF.Abs(v));
        Assert.True(largest == 0, $"a new paged tensor holds |x| up to {largest:E3}");
        span.Fill(2.5f);
        Assert.Equal(7500f, t.ToArray().Sum());
        t.Dispose();
        Assert.False(File.Exists(storage.FilePath), $"{storage.FilePath} should be deleted by Dispose");
        Assert.Equal(liveBefore, PagedMemory.LiveBytes);
    }

    [Fact]
    public void Paged_AdamW_is_bit_identical_to_AdamW_and_writes_the_same_state()
    {
        var big = new Quadratic(20_000, seed: 21);
        var small = new Quadratic(37, seed: 22);
        using var a1 = big.NewParameter();
        using var b1 = small.NewParameter();
        using var a2 = big.NewParameter();
        using var b2 = small.NewParameter();
        using var plain = new AdamW([a1, b1], learningRate: 0.01f);
        using var paged = new AdamW([a2, b2], learningRate: 0.01f, paged: true);
        Assert.True(paged.Paged);
        for (int t = 0; t < 10; t++)
        {
            big.SetGradient(a1);
            small.SetGradient(b1);
            plain.Step();
            big.SetGradient(a2);
            small.SetGradient(b2);
            paged.Step();
        }
        var (ma, wa) = AdamW8bitTests.Compare(a1.ToArray(), a2.ToArray());
        var (mb, wb) = AdamW8bitTests.Compare(b1.ToArray(), b2.ToArray());
        Assert.True(ma == 0 && mb == 0, $"{ma + mb} parameters differ between paged and plain AdamW, largest |Δ| = {Math.Max(wa, wb):E3}");
        Assert.Equal(AdamW8bitTests.StateBytes(plain), AdamW8bitTests.StateBytes(paged));
    }

    [Fact]
    public void Paged_AdamW8bit_is_bit_identical_to_AdamW8bit()
    {
        var big = new Quadratic(20_000, seed: 23);
        var small = new Quadratic(37, seed: 24);
        using var a1 = big.NewParameter();
        using var b1 = small.NewParameter();
        using var a2 = big.NewParameter();
        using var b2 = small.NewParameter();
        using var plain = new AdamW8bit([a1, b1], learningRate: 0.01f);
        using var paged = new AdamW8bit([a2, b2], learningRate: 0.01f, paged: true);
        long liveBefore = PagedMemory.LiveBytes;
        for (int t = 0; t < 10; t++)
        {
            big.SetGradient(a1);
            small.SetGradient(b1);
            plain.Step();
            big.SetGradient(a2);
            small.SetGradient(b2);
            paged.Step();
        }
        var (ma, wa) = AdamW8bitTests.Compare(a1.ToArray(), a2.ToArray());
        var (mb, wb) = AdamW8bitTests.Compare(b1.ToArray(), b2.ToArray());
        Assert.True(ma == 0 && mb == 0, $"{ma + mb} parameters differ between paged and plain AdamW8bit, largest |Δ| = {Math.Max(wa, wb):E3}");
        Assert.Equal(AdamW8bitTests.StateBytes(plain), AdamW8bitTests.StateBytes(paged));
        Assert.Equal(plain.StateBytes, PagedMemory.LiveBytes - liveBefore);
    }

    [Fact]
    public void Paged_state_lives_in_temporary_files_that_dispose_deletes()
    {
        var problem = new Quadratic(5_000, seed: 25);
        using var p = problem.NewParameter();
        using var q = problem.NewParameter();
        var before = OwnFiles();
        var adam = new AdamW([p, q], paged: true);
        var adam8 = new AdamW8bit([p, q], paged: true);
        problem.SetGradient(p);
        problem.SetGradient(q);
        adam.Step();
        adam8.Step();
        var created = OwnFiles().Except(before).ToList();
        // AdamW maps m and v of each parameter; AdamW8bit one block of codes and scales per parameter.
        Assert.True(created.Count == 6, $"expected 6 paged-state files, found {created.Count}: {string.Join(", ", created)}");
        Assert.All(created, f => Assert.True(File.Exists(f), $"{f} should exist while the optimizers are alive"));
        adam.Dispose();
        adam8.Dispose();
        var left = created.Where(File.Exists).ToList();
        Assert.True(left.Count == 0, $"{left.Count} paged-state files survived Dispose: {string.Join(", ", left)}");
    }

    [Fact]
    public void Paged_state_does_not_grow_the_GC_heap()
    {
        const int n = 1_000_000; // 8 MB of float32 moments, 2 MB of 8-bit ones
        var problem = new Quadratic(n, seed: 26);
        using var p = problem.NewParameter();
        using var adam = new AdamW([p], paged: true);
        using var adam8 = new AdamW8bit([p], paged: true);
        problem.SetGradient(p);
        AdamW8bitTests.WarmUp(paged: true);
        foreach (IOptimizer optimizer in new IOptimizer[] { adam, adam8 })
        {
            long liveBefore = PagedMemory.LiveBytes;
            long heapBefore = GC.GetAllocatedBytesForCurrentThread();
            optimizer.Step();
            long heapGrowth = GC.GetAllocatedBytesForCurrentThread() - heapBefore;
            long mapped = PagedMemory.LiveBytes - liveBefore;
            string name = optimizer.GetType().Name;
            output.WriteLine($"paged {name}: {mapped / (double)n:F5} bytes/param mapped, {heapGrowth / (double)n:F6} bytes/param on the GC heap ({heapGrowth} bytes)");
            long expected = optimizer is AdamW ? 8L * n : 2L * n + 8L * (n / AdamW8bit.BlockSize + (n % AdamW8bit.BlockSize > 0 ? 1 : 0));
            Assert.Equal(expected, mapped);
            Assert.True(heapGrowth < 64 * 1024, $"the first paged {name} step allocated {heapGrowth:N0} managed bytes for {mapped:N0} bytes of state");
        }
    }

    private static HashSet<string> OwnFiles() =>
        Directory.EnumerateFiles(Path.GetTempPath(), $"{PagedMemory.FilePrefix}{Environment.ProcessId}-*").ToHashSet();
}
