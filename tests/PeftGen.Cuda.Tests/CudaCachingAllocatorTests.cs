using PeftGen.Backends.Cuda;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>Binning, stream-ordered reuse, statistics and out-of-memory retry of the caching allocator, over a fake device.</summary>
public sealed class CudaCachingAllocatorTests
{
    private sealed class FakeDevice(long capacity) : IDeviceMemory
    {
        private ulong _next = 0x1000;
        public Dictionary<ulong, long> Live { get; } = [];
        public int Allocations { get; private set; }
        public int Frees { get; private set; }
        public long Used => Live.Values.Sum();

        public ulong Allocate(long bytes)
        {
            if (Used + bytes > capacity) throw new CudaOutOfMemoryException("fake device full");
            Allocations++;
            ulong p = _next;
            _next += (ulong)bytes;
            Live.Add(p, bytes);
            return p;
        }

        public void Free(ulong pointer)
        {
            Assert.True(Live.Remove(pointer), $"double free of 0x{pointer:x}");
            Frees++;
        }
    }

    private static readonly IntPtr StreamA = 1, StreamB = 2;

    [Theory]
    [InlineData(0, 512)]
    [InlineData(1, 512)]
    [InlineData(512, 512)]
    [InlineData(513, 1024)]
    [InlineData((1 << 20) - 1, 1 << 20)]
    [InlineData(1 << 20, 2 << 20)]
    [InlineData((2 << 20) + 1, 4 << 20)]
    [InlineData(100_000_000, 100_663_296)]
    public void Size_classes_round_small_requests_to_512_bytes_and_large_ones_to_2_MiB(long bytes, long expected)
    {
        Assert.Equal(expected, CudaCachingAllocator.SizeClass(bytes));
    }

    [Fact]
    public void A_freed_block_is_reused_for_the_same_class_on_the_same_stream_only()
    {
        var device = new FakeDevice(1L << 30);
        using var allocator = new CudaCachingAllocator(device);
        var a = allocator.Allocate(1000, StreamA);
        allocator.Free(a);
        var sameClass = allocator.Allocate(1024, StreamA);
        Assert.Equal(a.Pointer, sameClass.Pointer);
        var otherStream = allocator.Allocate(1000, StreamB);
        Assert.NotEqual(a.Pointer, otherStream.Pointer);
        var otherClass = allocator.Allocate(5000, StreamA);
        Assert.NotEqual(a.Pointer, otherClass.Pointer);
        var stats = allocator.Stats;
        Assert.Equal((1L, 3L), (stats.Hits, stats.Misses));
        Assert.Equal(3, device.Allocations);
    }

    [Fact]
    public void Statistics_track_live_cached_peak_and_reserved_bytes()
    {
        var device = new FakeDevice(1L << 30);
        using var allocator = new CudaCachingAllocator(device);
        var a = allocator.Allocate(3 << 20, StreamA); // class 4 MiB
        var b = allocator.Allocate(100, StreamA);     // class 512
        Assert.Equal((4L << 20) + 512, allocator.Stats.AllocatedBytes);
        allocator.Free(a);
        var s = allocator.Stats;
        Assert.Equal((512L, 4L << 20, (4L << 20) + 512, (4L << 20) + 512), (s.AllocatedBytes, s.CachedBytes, s.PeakAllocatedBytes, s.ReservedBytes));
        Assert.Equal(device.Used, s.ReservedBytes);
        Assert.Equal(4L << 20, allocator.ReleaseCached());
        Assert.Equal((0L, 512L), (allocator.Stats.CachedBytes, device.Used));
        allocator.Free(b);
    }

    [Fact]
    public void Out_of_memory_releases_the_cache_and_retries_once()
    {
        var device = new FakeDevice(10L << 20);
        using var allocator = new CudaCachingAllocator(device);
        var a = allocator.Allocate(6L << 20, StreamA);
        allocator.Free(a);                             // 6 MiB cached on stream A
        var b = allocator.Allocate(8L << 20, StreamB); // needs the cached 6 MiB back
        Assert.Equal(1, allocator.Stats.Retries);
        Assert.Equal(0, allocator.Stats.CachedBytes);
        Assert.Equal(8L << 20, device.Used);
        var e = Assert.Throws<CudaOutOfMemoryException>(() => allocator.Allocate(4L << 20, StreamA));
        Assert.Contains("4,194,304 bytes", e.Message);
        Assert.Contains("gradient checkpointing", e.Message);
        allocator.Free(b);
    }

    [Fact]
    public void Double_free_is_an_error_and_dispose_returns_everything()
    {
        var device = new FakeDevice(1L << 30);
        var allocator = new CudaCachingAllocator(device);
        var a = allocator.Allocate(10, StreamA);
        var b = allocator.Allocate(10, StreamA);
        allocator.Free(a);
        Assert.Throws<InvalidOperationException>(() => allocator.Free(a));
        allocator.Dispose();
        Assert.Single(device.Live); // b is still live
        allocator.Free(b);          // a block freed after dispose goes straight back to the device
        Assert.Empty(device.Live);
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(10, StreamA));
    }

    [Fact]
    public void A_training_step_pattern_allocates_from_the_device_only_in_the_first_step()
    {
        var device = new FakeDevice(1L << 34);
        using var allocator = new CudaCachingAllocator(device);
        long[] sizes = [4096 * 2048 * 4, 4096 * 4, 4096 * 5632 * 4, 4096 * 5632 * 4, 4096 * 32000 * 4, 17, 4096 * 2048 * 4];
        for (int step = 0; step < 5; step++)
        {
            var blocks = sizes.Select(s => allocator.Allocate(s, StreamA)).ToList();
            foreach (var block in Enumerable.Reverse(blocks)) allocator.Free(block);
        }
        Assert.Equal(sizes.Length, device.Allocations);
        Assert.Equal(4L * sizes.Length, allocator.Stats.Hits);
    }
}
