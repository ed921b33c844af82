using PeftGen.Backends.Cuda;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>Launch shapes and the paged-state placement policy, as pure functions.</summary>
public sealed class CudaLaunchTests
{
    [Theory]
    [InlineData(0L, 132, 1)]
    [InlineData(1L, 132, 1)]
    [InlineData(256L, 132, 1)]
    [InlineData(257L, 132, 2)]
    [InlineData(1_000_000L, 132, 3907)]
    [InlineData(100_000_000L, 132, 132 * 32)]
    public void Elementwise_grid_covers_n_and_is_capped_per_multiprocessor(long n, int sms, int blocks)
    {
        var config = CudaLaunch.Elementwise(n, sms);
        Assert.Equal((blocks, 1, 256), (config.GridX, config.GridY, config.BlockX));
    }

    [Theory]
    [InlineData(64, 32)]
    [InlineData(288, 128)]
    [InlineData(2048, 512)]
    [InlineData(32000, 1024)]
    public void Row_kernels_use_a_power_of_two_block_of_about_a_quarter_of_the_row(int columns, int threads)
    {
        var config = CudaLaunch.PerRow(4096, columns);
        Assert.Equal((4096, threads), (config.GridX, config.BlockX));
        Assert.Equal(0, config.BlockX % 32);
    }

    [Fact]
    public void Attention_launches_fit_48_KiB_of_shared_memory_up_to_head_size_128()
    {
        var fwd = CudaLaunch.AttentionForward(b: 4, tq: 2048, hq: 32, d: 128);
        Assert.Equal((256, 128, 256), (fwd.GridX, fwd.GridY, fwd.BlockX));
        Assert.Equal(4 * (32 * 129 + 32 * 128 + 8 * 128), fwd.SharedBytes);
        Assert.True(fwd.SharedBytes <= 48 * 1024);
        Assert.True(CudaLaunch.AttentionBackwardDq(4, 2048, 32, 128).SharedBytes <= 48 * 1024);
        var dkdv = CudaLaunch.AttentionBackwardDkDv(4, 2048, 4, 128);
        Assert.Equal((256, 16), (dkdv.GridX, dkdv.GridY));
        Assert.True(dkdv.SharedBytes <= 48 * 1024);
        Assert.Equal((2, 6), (CudaLaunch.AttentionDelta(1, 9, 6).GridX, CudaLaunch.AttentionDelta(1, 9, 6).GridY));
        Assert.Contains("up to 128", Assert.Throws<NotSupportedException>(() => CudaLaunch.AttentionForward(1, 1, 1, 256)).Message);
    }

    [Fact]
    public void Rmsnorm_dw_chunks_follow_the_cpu_rule()
    {
        Assert.Equal((32, 1), CudaLaunch.RmsNormDwChunks(1));
        Assert.Equal((32, 4), CudaLaunch.RmsNormDwChunks(100));
        Assert.Equal((32, 256), CudaLaunch.RmsNormDwChunks(8192));
        Assert.Equal((33, 249), CudaLaunch.RmsNormDwChunks(8193));
    }

    [Fact]
    public void Multi_tensor_chunks_are_a_running_sum_and_the_grid_is_the_total()
    {
        var (first, total) = CudaLaunch.MultiTensorChunks([1, 4096, 4097, 8192 * 10]);
        Assert.Equal([0L, 1, 2, 4], first);
        Assert.Equal(24L, total);
        Assert.Throws<ArgumentOutOfRangeException>(() => CudaLaunch.MultiTensorChunks([0]));
        Assert.Equal(3, CudaLaunch.AdamW8bit(513).GridX);
        Assert.Equal(2, CudaLaunch.Dequant4BitGemv(9).GridX);
    }

    [Fact]
    public void Managed_budget_keeps_headroom_and_never_exceeds_free_memory()
    {
        const long GiB = 1L << 30;
        Assert.Equal(60 * GiB - (long)(80 * GiB * 0.05), PagedStatePolicy.ManagedBudget(60 * GiB, 80 * GiB));
        Assert.Equal(GiB - (512L << 20), PagedStatePolicy.ManagedBudget(GiB, 4 * GiB)); // 5 % of 4 GiB < 512 MiB
        Assert.Equal(0, PagedStatePolicy.ManagedBudget(100L << 20, 80 * GiB));
        Assert.Throws<ArgumentException>(() => PagedStatePolicy.ManagedBudget(2 * GiB, GiB));
    }

    [Fact]
    public void State_is_placed_in_managed_memory_while_it_fits_and_the_rest_in_mapped_host_memory()
    {
        const long GiB = 1L << 30;
        // 24 GiB total, 3 GiB free: budget = 3 GiB − 1.2 GiB = 1.8 GiB; the second 1 GiB does not fit, the later smaller ones do.
        var placement = PagedStatePolicy.Place([GiB, GiB, GiB / 2, GiB / 4], 3 * GiB, 24 * GiB);
        Assert.Equal([StatePlacement.Managed, StatePlacement.HostMapped, StatePlacement.Managed, StatePlacement.Managed], placement);
        long managed = new[] { GiB, GiB, GiB / 2, GiB / 4 }.Where((_, i) => placement[i] == StatePlacement.Managed).Sum();
        Assert.True(managed <= PagedStatePolicy.ManagedBudget(3 * GiB, 24 * GiB));
        Assert.All(PagedStatePolicy.Place([1, 2, 3], 0, 24 * GiB), p => Assert.Equal(StatePlacement.HostMapped, p));
        Assert.All(PagedStatePolicy.Place([GiB, GiB], 20 * GiB, 24 * GiB), p => Assert.Equal(StatePlacement.Managed, p));
    }
    [Theory]
    [InlineData(1, 512)]
    [InlineData(65_535, 32_000)]
    [InlineData(65_536, 32_000)]
    [InlineData(262_144, 128_256)]  // 128 sequences of 2,048 tokens, Llama 3's vocabulary
    public void Cross_entropy_backward_stays_within_grid_y_for_any_number_of_tokens(int rows, int vocab)
    {
        var config = CudaLaunch.CrossEntropyBackward(rows, vocab);
        config.Validate("peft_cross_entropy_bwd_f32");
        Assert.InRange(config.GridY, 1, CudaLaunch.MaxGridY);
        Assert.InRange(config.GridX, 1, 32);
    }

    /// <summary>The kernel's loops (rows by gridDim.y, columns by gridDim.x·blockDim.x), run on the host: every element exactly once.</summary>
    [Theory]
    [InlineData(70_001, 7)]
    [InlineData(3, 9_000)]
    [InlineData(65_535, 1)]
    public void Cross_entropy_backward_plan_visits_every_element_once_above_65535_rows(int n, int v)
    {
        var config = CudaLaunch.CrossEntropyBackward(n, v);
        var visits = new byte[(long)n * v];
        for (int by = 0; by < config.GridY; by++)
            for (int bx = 0; bx < config.GridX; bx++)
                for (int tx = 0; tx < config.BlockX; tx++)
                    for (int r = by; r < n; r += config.GridY)
                        for (int j = bx * config.BlockX + tx; j < v; j += config.GridX * config.BlockX)
                            visits[(long)r * v + j]++;
        Assert.All(visits, c => Assert.Equal(1, c));
    }

    [Theory]
    [InlineData(1, 65_536, 256)]
    [InlineData(1, 1, 1025)]
    [InlineData(0, 1, 256)]
    public void Launch_shapes_outside_cuda_limits_fail_with_the_kernel_and_the_sizes(int gridX, int gridY, int block)
    {
        var e = Assert.Throws<NotSupportedException>(() => new LaunchConfig(gridX, gridY, block).Validate("peft_example"));
        Assert.Contains("peft_example", e.Message);
        Assert.Contains($"grid {gridX}x{gridY}, block {block}", e.Message);
    }

    [Fact]
    public void Attention_with_more_than_65535_batch_heads_fails_before_launch()
    {
        var config = CudaLaunch.AttentionForward(b: 4096, tq: 16, hq: 32, d: 64);
        Assert.Throws<NotSupportedException>(() => config.Validate("peft_attention_fwd_f32"));
        CudaLaunch.AttentionForward(b: 2047, tq: 16, hq: 32, d: 64).Validate("peft_attention_fwd_f32");
    }
}
