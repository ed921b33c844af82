using System.Runtime.CompilerServices;
using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cuda;
using PeftGen.Backends.Cuda.Native;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>
/// The host-only logic of <see cref="CudaBackend"/>, checked on the CPU: the cuBLAS call chosen for each row-major GEMM
/// (run through a column-major reference and compared with the CPU backend), the strided-copy layout (run through a port of
/// the kernel's index loop), argument packing, paged-state placement and device-storage bookkeeping with a fake device.
/// </summary>
public sealed unsafe class CudaBackendHostTests
{
    private static float[] Random(int n, int seed)
    {
        var random = new Random(seed);
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = (float)(random.NextDouble() * 2 - 1);
        return data;
    }

    /// <summary>cuBLAS's column-major GEMM semantics, naively: C = alpha·op(A)·op(B) + beta·C per batch entry.</summary>
    private static void CublasReference(CublasGemmCall call, float[] a, float[] b, float[] c, float alpha, float beta)
    {
        for (int p = 0; p < call.Batch; p++)
        {
            long oa = p * call.StrideA, ob = p * call.StrideB, oc = p * call.StrideC;
            for (int i = 0; i < call.M; i++)
                for (int j = 0; j < call.N; j++)
                {
                    double sum = 0;
                    for (int l = 0; l < call.K; l++)
                    {
                        float av = call.OpA == Cublas.OpN ? a[oa + i + (long)l * call.Lda] : a[oa + l + (long)i * call.Lda];
                        float bv = call.OpB == Cublas.OpN ? b[ob + l + (long)j * call.Ldb] : b[ob + j + (long)l * call.Ldb];
                        sum += (double)av * bv;
                    }
                    long at = oc + i + (long)j * call.Ldc;
                    c[at] = (float)(alpha * sum + beta * c[at]);
                }
        }
    }

    [Theory]
    [InlineData(false, false, 1, 0)]
    [InlineData(false, true, 1, 0)]
    [InlineData(true, false, 1, 0)]
    [InlineData(true, true, 1, 0)]
    [InlineData(false, true, 3, 0)]
    [InlineData(true, false, 3, 3)]
    [InlineData(false, false, 4, 2)]
    public void Gemm_plan_on_cublas_semantics_matches_the_cpu_backend(bool transA, bool transB, int batch, int pad)
    {
        int m = 7, n = 5, k = 9;
        float alpha = 0.75f, beta = 0.5f;
        int lda = (transA ? m : k) + pad, ldb = (transB ? k : n) + pad, ldc = n + pad;
        long strideA = (long)(transA ? k : m) * lda, strideB = batch > 1 && pad == 2 ? 0 : (long)(transB ? n : k) * ldb; // pad 2: B shared
        long strideC = (long)m * ldc;
        var a = Random((int)(strideA * batch), 1);
        var b = Random((int)Math.Max(strideB * batch, (long)(transB ? n : k) * ldb), 2);
        var c0 = Random((int)(strideC * batch), 3);

        var expected = (float[])c0.Clone();
        using (var ta = Tensor.FromArray(a, a.Length))
        using (var tb = Tensor.FromArray(b, b.Length))
        using (var tc = Tensor.FromArray(expected, expected.Length))
        {
            CpuBackend.Instance.Gemm(transA, transB, m, n, k, alpha, ta, lda, strideA, tb, ldb, strideB, beta, tc, ldc, strideC, batch);
            expected = tc.ToArray();
        }

        var call = CudaGemmPlan.Plan(transA, transB, m, n, k, lda, strideA, ldb, strideB, ldc, strideC, batch, CudaGemmPrecision.Bf16);
        Assert.Equal((n, m, k), (call.M, call.N, call.K));
        Assert.Equal(Cublas.Compute32FFast16BF, call.ComputeType);
        var actual = (float[])c0.Clone();
        CublasReference(call, b, a, actual, alpha, beta); // cuBLAS's A is the row-major B
        float worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = MathF.Max(worst, MathF.Abs(expected[i] - actual[i]));
        Assert.True(worst <= 1e-5f, $"largest error {worst:E3} between the cuBLAS plan and the CPU GEMM");
    }

    [Fact]
    public void Gemm_plan_rejects_short_leading_dimensions_and_negative_sizes()
    {
        var e = Assert.Throws<ArgumentException>(() => CudaGemmPlan.Plan(false, false, 4, 6, 5, 4, 0, 6, 0, 6, 0, 1, CudaGemmPrecision.Bf16));
        Assert.Contains("lda=4 (needs ≥ 5)", e.Message);
        Assert.Throws<ArgumentException>(() => CudaGemmPlan.Plan(false, true, 4, 6, 5, 5, 0, 4, 0, 6, 0, 1, CudaGemmPrecision.Bf16));
        Assert.Throws<ArgumentException>(() => CudaGemmPlan.Plan(false, false, 4, 6, 5, 5, 0, 6, 0, 5, 0, 1, CudaGemmPrecision.Bf16));
        Assert.Throws<ArgumentException>(() => CudaGemmPlan.Plan(false, false, -1, 6, 5, 5, 0, 6, 0, 6, 0, 1, CudaGemmPrecision.Bf16));
        Assert.True(CudaGemmPlan.Plan(false, false, 0, 6, 5, 5, 0, 6, 0, 6, 0, 1, CudaGemmPrecision.Float32).IsEmpty);
        Assert.Equal(Cublas.Compute32F, CudaGemmPlan.ComputeType(CudaGemmPrecision.Float32));
        Assert.Equal(Cublas.Compute32FFastTF32, CudaGemmPlan.ComputeType(CudaGemmPrecision.Tf32));
    }

    /// <summary>peft_copy_strided_f32's index loop, on the host.</summary>
    private static void CopyKernelOnHost(float[] src, long srcOffset, float[] dst, long dstOffset, long n, int rank, StridedLayout layout, bool accumulate)
    {
        for (long i = 0; i < n; i++)
        {
            long rest = i, s = 0, d = 0;
            for (int dim = rank - 1; dim >= 0; dim--)
            {
                long index = rest % layout.Size[dim];
                rest /= layout.Size[dim];
                s += index * layout.Src[dim];
                d += index * layout.Dst[dim];
            }
            dst[dstOffset + d] = accumulate ? dst[dstOffset + d] + src[srcOffset + s] : src[srcOffset + s];
        }
    }

    [Fact]
    public void Strided_copy_layout_reproduces_the_cpu_copy_of_permuted_and_sliced_views()
    {
        var data = Random(2 * 3 * 4 * 5, 4);
        using var x = Tensor.FromArray(data, 2, 3, 4, 5);
        var views = new (string Name, Func<Tensor> View)[]
        {
            ("dense", () => x),
            ("permute(0,2,1,3)", () => x.Permute(0, 2, 1, 3)),
            ("transpose(-1,-2)", () => x.Transpose(-1, -2)),
            ("slice(2,1,2)", () => x.Slice(2, 1, 2)),
            ("permute(3,1,0,2).slice", () => x.Permute(3, 1, 0, 2).Slice(0, 1, 3)),
        };
        foreach (var (name, make) in views)
        {
            using var scope = TensorScope.Begin();
            var view = make();
            var expected = view.ToArray(); // row-major order of the view, via the CPU's strided copy
            var (layout, rank) = StridedLayout.Of(view.Shape, view.Strides, ShapeUtil.ContiguousStrides(view.ShapeArray));
            var actual = new float[view.Count];
            CopyKernelOnHost(data, view.Offset, actual, 0, view.Count, rank, layout, accumulate: false);
            Assert.Equal(expected, actual);
            CopyKernelOnHost(data, view.Offset, actual, 0, view.Count, rank, layout, accumulate: true);
            Assert.Equal(expected.Select(v => v * 2).ToArray(), actual);
        }
    }

    [Fact]
    public void Strided_copy_layout_merges_contiguous_dimensions_and_limits_the_rank()
    {
        var (layout, rank) = StridedLayout.Of([2, 3, 4], [12, 4, 1], [12, 4, 1]);
        Assert.Equal(1, rank);
        Assert.Equal(24, layout.Size[0]);
        Assert.Equal(1, layout.Src[0]);
        var (t, tr) = StridedLayout.Of([4, 3], [1, 4], [3, 1]); // a transposed source
        Assert.Equal(2, tr);
        Assert.Equal((4L, 3L, 1L, 4L), (t.Size[0], t.Size[1], t.Src[0], t.Src[1]));
        var (_, scalar) = StridedLayout.Of([], [], []);
        Assert.Equal(1, scalar);
        // Nine dimensions of size 2 whose source strides never chain cannot be merged.
        int[] shape = Enumerable.Repeat(2, 9).ToArray();
        long[] src = Enumerable.Range(0, 9).Select(i => 1L << (2 * i)).Reverse().ToArray();
        long[] dst = ShapeUtil.ContiguousStrides(shape);
        var e = Assert.Throws<NotSupportedException>(() => StridedLayout.Of(shape, src, dst));
        Assert.Contains("at most 8 dimensions", e.Message);
        Assert.Equal(192, sizeof(StridedLayout));
    }

    [Fact]
    public void Kernel_argument_structs_have_the_kernels_sizes()
    {
        // adamw.cu AdamTensor: 4 pointers, 2 i64, 2 floats; quant4bit.cu Quant4Bit: 6 pointers, a float and an int.
        Assert.Equal(56, Unsafe.SizeOf<AdamTensorArgs>());
        Assert.Equal(56, Unsafe.SizeOf<Quant4BitArgs>());
    }

    [Fact]
    public void Multi_tensor_adamw_entries_carry_chunks_and_the_single_kernels_scalars()
    {
        var tensors = new[]
        {
            new AdamWTensor(0x100, 0x200, 0x300, 0x400, 4096, 1e-3f, 0.01f),
            new AdamWTensor(0x500, 0x600, 0x700, 0x800, 4097, 2e-3f, 0f),
            new AdamWTensor(0x900, 0xa00, 0xb00, 0xc00, 1, 1e-3f, 0.1f),
        };
        float bc1 = 1 - MathF.Pow(0.9f, 3);
        var (entries, total) = CudaArgs.AdamWMulti(tensors, bc1);
        Assert.Equal(4, total);
        Assert.Equal([0L, 1L, 3L], entries.Select(e => e.FirstChunk));
        Assert.Equal(0x700UL, entries[1].M);
        Assert.Equal(4097, entries[1].N);
        Assert.Equal(1f - 1e-3f * 0.01f, entries[0].Decay);
        Assert.Equal(2e-3f / bc1, entries[1].StepSize);
        Assert.Equal(1f - 1e-3f * 0.1f, entries[2].Decay);
    }

    [Fact]
    public void Eight_bit_state_offsets_follow_the_cpu_layout()
    {
        // AdamW8bit's QuantizedMoments: absmax m [blocks], absmax v [blocks] (float32), codes m [count], codes v [count].
        long count = 10_000;
        int blocks = PeftGen.Quantization.DynamicMap.BlockCount(count, PeftGen.Optim.AdamW8bit.BlockSize);
        var (absM, absV, codesM, codesV) = CudaArgs.AdamW8bitOffsets(count, blocks);
        Assert.Equal((0L, 4L * blocks, 8L * blocks, 8L * blocks + count), (absM, absV, codesM, codesV));
        Assert.Equal(PeftGen.Optim.AdamW8bit.BlockSize, CudaLaunch.AdamW8bitBlock);
    }

    [Fact]
    public void Paged_budget_places_buffers_as_the_policy_does_and_takes_back_released_ones()
    {
        long gib = 1L << 30, free = 3 * gib, total = 16 * gib;
        long[] sizes = [gib, gib / 2, 2 * gib, gib / 4, gib];
        var budget = new PagedStateBudget(free, total);
        var running = sizes.Select(budget.Place).ToArray();
        Assert.Equal(PagedStatePolicy.Place(sizes, free, total), running);
        long placed = sizes.Where((_, i) => running[i] == StatePlacement.Managed).Sum();
        Assert.Equal(placed, budget.ManagedBytes);
        budget.Release(StatePlacement.Managed, gib);
        budget.Release(StatePlacement.HostMapped, 2 * gib); // mapped buffers were never counted
        Assert.Equal(placed - gib, budget.ManagedBytes);
        Assert.Equal(StatePlacement.Managed, budget.Place(gib));
    }

    private sealed class FakeDevice : IDeviceMemory
    {
        private ulong _next = 0x10000;
        public int Frees { get; private set; }

        public ulong Allocate(long bytes)
        {
            ulong p = _next;
            _next += (ulong)bytes;
            return p;
        }

        public void Free(ulong pointer) => Frees++;
    }

    [Fact]
    public void Cuda_storage_goes_back_to_the_allocator_when_the_last_view_lets_go()
    {
        var device = new FakeDevice();
        using var allocator = new CudaCachingAllocator(device);
        var stream = (IntPtr)7;
        var cuda = new Device(DeviceType.Cuda, 0);
        var storage = new CudaStorage(cuda, 6 * 4 * sizeof(float), allocator, stream);
        var t = Tensor.OnStorage(storage, [6, 4], DType.Float32, scoped: false);
        Assert.Equal(cuda, t.Device);
        Assert.Equal(storage.Address, CudaStorage.AddressOf(t));
        using (TensorScope.Begin())
        {
            var row = t.Slice(0, 2, 3);
            Assert.Equal(storage.Address + 2 * 4 * sizeof(float), CudaStorage.AddressOf(row));
            t.Dispose();
            Assert.Equal(512, allocator.Stats.AllocatedBytes); // the view still holds the block
        } // the view is released with the scope
        var stats = allocator.Stats;
        Assert.Equal((0L, 512L, 1L), (stats.AllocatedBytes, stats.CachedBytes, stats.Misses));
        // The next tensor of the same class on the same stream reuses the block.
        var again = new CudaStorage(cuda, 100, allocator, stream);
        Assert.Equal(storage.Address, again.Address);
        Assert.Equal(1, allocator.Stats.Hits);
        again.Release();
        Assert.Equal(0, device.Frees);
    }

    [Fact]
    public void Paged_cuda_storage_calls_its_own_release_once()
    {
        int released = 0;
        var storage = new CudaStorage(new Device(DeviceType.Cuda, 1), 1024, 0xabc000, StatePlacement.HostMapped, _ => released++);
        Assert.Equal(StatePlacement.HostMapped, storage.Placement);
        storage.AddRef();
        storage.Release();
        Assert.Equal(0, released);
        storage.Release();
        Assert.Equal(1, released);
        Assert.Throws<ArgumentException>(() => new CudaStorage(Device.Cpu, 16, 0x1000, StatePlacement.Managed, _ => { }));
    }

    [Fact]
    public void Host_access_to_a_cuda_tensor_fails_with_advice()
    {
        using var allocator = new CudaCachingAllocator(new FakeDevice());
        var storage = new CudaStorage(new Device(DeviceType.Cuda, 0), 16, allocator, IntPtr.Zero);
        using var t = Tensor.OnStorage(storage, [4], DType.Float32, scoped: false);
        var e = Assert.Throws<InvalidOperationException>(() => t.AsSpan());
        Assert.Contains("cuda:0", e.Message);
        var raw = Assert.Throws<InvalidOperationException>(() => t.RawDataSpan());
        Assert.Contains("To(Device.Cpu)", raw.Message);
        using var host = Tensor.Zeros(4);
        var address = Assert.Throws<InvalidOperationException>(() => CudaStorage.AddressOf(host));
        Assert.Contains("To(device)", address.Message);
    }

    [Fact]
    public void Moving_to_cuda_without_a_gpu_fails_naming_the_search_and_leaves_the_tensor_usable()
    {
        if (CudaFactAttribute.SkipReason == null) return; // a GPU is present: CudaBackendParityTests cover the move
        using var t = Tensor.FromArray([1f, 2f, 3f], 3);
        Assert.Same(t, t.To(Device.Cpu));
        t.MoveTo(Device.Cpu);
        var e = Assert.Throws<CudaNotAvailableException>(() => t.To(new Device(DeviceType.Cuda, 0)));
        Assert.Contains("libcuda", e.Message);
        Assert.Throws<CudaNotAvailableException>(() => t.MoveTo(new Device(DeviceType.Cuda, 0)));
        Assert.Equal([1f, 2f, 3f], t.ToArray());
        Assert.Equal(Device.Cpu, t.Device);
    }
}
