using System.Runtime.CompilerServices;
using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cuda.Native;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// The GPU backend: every <see cref="IBackend"/> op launches the embedded kernels (compiled by NVRTC on first use) or
/// cuBLAS on the device's stream; nothing waits for the device except reads back to the host (sums, downloads) and the
/// uploads of token ids and targets. Tensors are float32 in device memory from the context's caching allocator; GEMMs run
/// on the tensor cores at <see cref="GemmPrecision"/> with float32 accumulation; 4-bit bases are dequantized to bf16 and
/// multiplied by cuBLAS (bf16 × bf16 → float32), or by the fused GEMV for up to eight rows; frozen 16-bit bases feed their
/// bf16 weight (an fp16 one rounded to bf16) straight to the same cuBLAS call.
/// </summary>
internal sealed unsafe class CudaBackend : IBackend, IOptimizerKernels, IRandomKernels
{
    private static readonly Dictionary<int, CudaBackend> s_backends = [];
    private static readonly Lock s_lock = new();

    private readonly CudaContext _ctx;
    private readonly ConditionalWeakTable<QuantizedWeight, DeviceQuantizedWeight> _weights = new();
    private readonly Lock _weightLock = new();
    private DeviceBlock? _signedMap, _unsignedMap;

    private CudaBackend(CudaContext context) => _ctx = context;

    /// <summary>The backend of <paramref name="device"/>, creating its context on first use.</summary>
    /// <exception cref="CudaNotAvailableException">CUDA or the device is not available.</exception>
    public static CudaBackend For(Device device)
    {
        if (device.Type != DeviceType.Cuda) throw new ArgumentException($"CudaBackend.For needs a CUDA device; got {device}.", nameof(device));
        lock (s_lock)
        {
            if (!s_backends.TryGetValue(device.Index, out var backend))
                s_backends[device.Index] = backend = new CudaBackend(CudaContext.Get(device.Index));
            backend._ctx.MakeCurrent();
            return backend;
        }
    }

    /// <summary>The device's context (stream, allocator, cuBLAS handle).</summary>
    public CudaContext Context => _ctx;

    /// <summary>Tensor-core use of the float32 GEMMs (default bf16 inputs, float32 accumulation).</summary>
    public CudaGemmPrecision GemmPrecision { get; set; } = CudaGemmPrecision.Bf16;

    private int Sms => _ctx.Info.Multiprocessors;

    // ---- helpers ---------------------------------------------------------------------------------------

    private static ulong F32(Tensor t)
    {
        if (t.DType != DType.Float32)
            throw new InvalidOperationException($"{t.DescribeForError()} is {t.DType}; the CUDA kernels take float32. Convert with To(DType.Float32) on the host first.");
        return CudaStorage.AddressOf(t);
    }

    private static ulong F32Dense(Tensor t, string op)
    {
        if (!t.IsContiguous)
            throw new InvalidOperationException($"CUDA {op}: {t.DescribeForError()} is a strided view; the kernel needs a contiguous tensor (Contiguous()).");
        return F32(t);
    }

    /// <summary>The address of a dense bf16 or fp16 tensor (a frozen 16-bit weight or table).</summary>
    private static ulong Dense16(Tensor t, string op)
    {
        if (t.DType is not (DType.BFloat16 or DType.Float16))
            throw new InvalidOperationException($"CUDA {op}: {t.DescribeForError()} is {t.DType}; this kernel reads a bf16 or fp16 tensor.");
        if (!t.IsContiguous)
            throw new InvalidOperationException($"CUDA {op}: {t.DescribeForError()} is a strided view; the kernel needs a contiguous tensor.");
        return CudaStorage.AddressOf(t);
    }

    private void Launch(CudaModule module, string name, LaunchConfig config, params ReadOnlySpan<IntPtr> arguments) =>
        _ctx.Launch(module, name, config, arguments);

    private DeviceBlock Scratch(long bytes) => _ctx.Allocator.Allocate(bytes, _ctx.Stream);

    // Freed blocks are reused only by later work on the same stream, so a scratch block may be freed right after the
    // launches that use it are queued.
    private void Release(DeviceBlock block) => _ctx.Allocator.Free(block);

    private DeviceBlock UploadInts(ReadOnlySpan<int> values) => _ctx.Upload(values);

    // ---- copies and elementwise ------------------------------------------------------------------------

    public void CopyStrided(Tensor src, Tensor dst, bool accumulate)
    {
        if (src.Count == 0) return;
        if (src.Device.Type == DeviceType.Cpu || dst.Device.Type == DeviceType.Cpu)
        {
            CopyAcrossDevices(src, dst, accumulate);
            return;
        }
        if (!accumulate && src.IsContiguous && dst.IsContiguous && src.DType == dst.DType)
        {
            CudaStorage.CopyBetweenDevices(src, dst);
            return;
        }
        ulong s = F32(src), d = F32(dst);
        var (layout, rank) = StridedLayout.Of(src.Shape, src.Strides, dst.Strides);
        long n = src.Count;
        int acc = accumulate ? 1 : 0;
        Launch(CudaModule.Elementwise, CudaKernelNames.CopyStrided, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&s), (IntPtr)(&d), (IntPtr)(&n), (IntPtr)(&rank), (IntPtr)(&layout), (IntPtr)(&acc));
    }

    private static void CopyAcrossDevices(Tensor src, Tensor dst, bool accumulate)
    {
        if (dst.Device.Type == DeviceType.Cpu)
        {
            // Device → host: download densely, then let the CPU backend place (or add) it.
            using var host = src.To(Device.Cpu);
            CpuBackend.Instance.CopyStrided(host, dst, accumulate);
            return;
        }
        // Host → device: upload densely, then copy (or add) on the device.
        using var onDevice = src.To(dst.Device);
        For(dst.Device).CopyStrided(onDevice, dst, accumulate);
    }

    public void DropoutMask(Tensor mask, float p, float keep, ulong seed)
    {
        ulong y = F32Dense(mask, "DropoutMask");
        long n = mask.Count;
        Launch(CudaModule.Elementwise, CudaKernelNames.DropoutMask, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&y), (IntPtr)(&n), (IntPtr)(&seed), (IntPtr)(&p), (IntPtr)(&keep));
    }

    public void Fill(Tensor dst, float value)
    {
        ulong y = F32Dense(dst, "Fill");
        long n = dst.Count;
        Launch(CudaModule.Elementwise, CudaKernelNames.Fill, CudaLaunch.Elementwise(n, Sms), (IntPtr)(&y), (IntPtr)(&value), (IntPtr)(&n));
    }

    public void AddScaled(Tensor a, float alpha, Tensor b, float beta, Tensor y)
    {
        ulong pa = F32Dense(a, "AddScaled"), pb = F32Dense(b, "AddScaled"), py = F32Dense(y, "AddScaled");
        long n = a.Count, nb = Math.Max(1, b.Count);
        Launch(CudaModule.Elementwise, CudaKernelNames.AddScaled, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&pa), (IntPtr)(&alpha), (IntPtr)(&pb), (IntPtr)(&beta), (IntPtr)(&py), (IntPtr)(&n), (IntPtr)(&nb));
    }

    public void Mul(Tensor a, Tensor b, Tensor y, bool accumulate)
    {
        ulong pa = F32Dense(a, "Mul"), pb = F32Dense(b, "Mul"), py = F32Dense(y, "Mul");
        long n = a.Count;
        int acc = accumulate ? 1 : 0;
        Launch(CudaModule.Elementwise, CudaKernelNames.Mul, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&pa), (IntPtr)(&pb), (IntPtr)(&py), (IntPtr)(&n), (IntPtr)(&acc));
    }

    public void MulRows(Tensor a, Tensor v, Tensor y, bool accumulate)
    {
        ulong pa = F32Dense(a, "MulRows"), pv = F32Dense(v, "MulRows"), py = F32Dense(y, "MulRows");
        long n = a.Count;
        int c = checked((int)v.Count), acc = accumulate ? 1 : 0;
        Launch(CudaModule.Elementwise, CudaKernelNames.MulRows, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&pa), (IntPtr)(&pv), (IntPtr)(&py), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&acc));
    }

    public void SumRowsOfProduct(Tensor g, Tensor a, Tensor dst, bool accumulate) =>
        ColumnSum(F32Dense(g, "SumRowsOfProduct"), F32Dense(a, "SumRowsOfProduct"), dst, g.Count, accumulate);

    public void Scale(Tensor x, float s, Tensor y, bool accumulate)
    {
        ulong px = F32Dense(x, "Scale"), py = F32Dense(y, "Scale");
        long n = x.Count;
        int acc = accumulate ? 1 : 0;
        Launch(CudaModule.Elementwise, CudaKernelNames.Scale, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&px), (IntPtr)(&s), (IntPtr)(&py), (IntPtr)(&n), (IntPtr)(&acc));
    }

    public void SumRows(Tensor src, Tensor dst, bool accumulate) => ColumnSum(F32Dense(src, "SumRows"), 0, dst, src.Count, accumulate);

    private void ColumnSum(ulong src, ulong a, Tensor dst, long count, bool accumulate)
    {
        ulong d = F32Dense(dst, "SumRows");
        int c = checked((int)dst.Count), rows = checked((int)(count / Math.Max(1, c))), acc = accumulate ? 1 : 0;
        Launch(CudaModule.Elementwise, CudaKernelNames.ColumnSum, CudaLaunch.PerColumn(c),
            (IntPtr)(&src), (IntPtr)(&a), (IntPtr)(&d), (IntPtr)(&rows), (IntPtr)(&c), (IntPtr)(&acc));
    }

    public double Sum(Tensor x) => Reduce(x, squares: false);

    public double SumSquares(Tensor x) => Reduce(x, squares: true);

    private double Reduce(Tensor x, bool squares)
    {
        long n = x.Count;
        if (n == 0) return 0;
        ulong px = F32Dense(x, squares ? "SumSquares" : "Sum");
        var config = CudaLaunch.Elementwise(n, Sms);
        var partials = Scratch((long)config.GridX * sizeof(double));
        try
        {
            ulong pp = partials.Pointer;
            int sq = squares ? 1 : 0;
            Launch(CudaModule.Elementwise, CudaKernelNames.ReduceSum, config, (IntPtr)(&px), (IntPtr)(&pp), (IntPtr)(&n), (IntPtr)(&sq));
            double total = 0;
            foreach (double part in _ctx.Download<double>(pp, config.GridX)) total += part; // in block order: deterministic
            return total;
        }
        finally
        {
            Release(partials);
        }
    }

    // ---- GEMM ------------------------------------------------------------------------------------------

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        Tensor a, int lda, long strideA, Tensor b, int ldb, long strideB,
        float beta, Tensor c, int ldc, long strideC, int batch)
    {
        var call = CudaGemmPlan.Plan(transA, transB, m, n, k, lda, strideA, ldb, strideB, ldc, strideC, batch, GemmPrecision);
        RunGemm(call, F32(b), F32(a), F32(c), Cublas.DataR32F, alpha, beta);
    }

    /// <summary>Runs <paramref name="call"/>: <paramref name="first"/> is cuBLAS's A (the row-major B), <paramref name="second"/> its B.</summary>
    private void RunGemm(CublasGemmCall call, ulong first, ulong second, ulong c, int inputType, float alpha, float beta)
    {
        if (call.IsEmpty) return;
        var handle = _ctx.Cublas;
        if (call.Batch == 1)
            CudaErrors.CheckCublas(Cublas.GemmEx(handle, call.OpA, call.OpB, call.M, call.N, call.K, &alpha,
                first, inputType, call.Lda, second, inputType, call.Ldb, &beta, c, Cublas.DataR32F, call.Ldc, call.ComputeType, Cublas.GemmDefault),
                $"cublasGemmEx(m={call.M}, n={call.N}, k={call.K})");
        else
            CudaErrors.CheckCublas(Cublas.GemmStridedBatchedEx(handle, call.OpA, call.OpB, call.M, call.N, call.K, &alpha,
                first, inputType, call.Lda, call.StrideA, second, inputType, call.Ldb, call.StrideB, &beta,
                c, Cublas.DataR32F, call.Ldc, call.StrideC, call.Batch, call.ComputeType, Cublas.GemmDefault),
                $"cublasGemmStridedBatchedEx(m={call.M}, n={call.N}, k={call.K}, batch={call.Batch})");
    }

    // ---- embeddings, norms, activations, rotary ---------------------------------------------------------

    public void EmbeddingForward(Tensor weight, ReadOnlySpan<int> ids, Tensor y)
    {
        if (ids.Length == 0) return;
        bool wide = weight.DType == DType.Float32;
        ulong w = wide ? F32Dense(weight, "EmbeddingForward") : Dense16(weight, "EmbeddingForward");
        ulong py = F32Dense(y, "EmbeddingForward");
        var gids = UploadInts(ids);
        ulong pi = gids.Pointer;
        int n = ids.Length, c = weight.Size(1);
        if (wide)
            Launch(CudaModule.Elementwise, CudaKernelNames.EmbeddingForward, CudaLaunch.PerRow(n, c),
                (IntPtr)(&w), (IntPtr)(&pi), (IntPtr)(&py), (IntPtr)(&n), (IntPtr)(&c));
        else
        {
            int isBf16 = weight.DType == DType.BFloat16 ? 1 : 0;
            Launch(CudaModule.Elementwise, CudaKernelNames.Embedding16BitForward, CudaLaunch.PerRow(n, c),
                (IntPtr)(&w), (IntPtr)(&pi), (IntPtr)(&py), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&isBf16));
        }
        Release(gids);
    }

    public void EmbeddingBackward(Tensor dy, ReadOnlySpan<int> ids, Tensor dweight)
    {
        if (ids.Length == 0) return;
        var gids = UploadInts(ids);
        ulong g = F32Dense(dy, "EmbeddingBackward"), dw = F32Dense(dweight, "EmbeddingBackward"), pi = gids.Pointer;
        int n = ids.Length, c = dweight.Size(1);
        Launch(CudaModule.Elementwise, CudaKernelNames.EmbeddingBackward, CudaLaunch.PerColumn(c),
            (IntPtr)(&g), (IntPtr)(&pi), (IntPtr)(&dw), (IntPtr)(&n), (IntPtr)(&c));
        Release(gids);
    }

    public void RmsNormForward(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps)
    {
        ulong px = F32Dense(x, "RmsNorm"), pw = F32Dense(weight, "RmsNorm"), py = F32Dense(y, "RmsNorm"), pr = F32Dense(rstd, "RmsNorm");
        int c = weight.Size(0), n = checked((int)(x.Count / c));
        if (n == 0) return;
        Launch(CudaModule.RmsNorm, CudaKernelNames.RmsNormForward, CudaLaunch.PerRow(n, c),
            (IntPtr)(&px), (IntPtr)(&pw), (IntPtr)(&py), (IntPtr)(&pr), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&eps));
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dweight, bool accumulateDx)
    {
        ulong pdy = F32Dense(dy, "RmsNormBackward"), px = F32Dense(x, "RmsNormBackward"), pw = F32Dense(weight, "RmsNormBackward");
        ulong pr = F32Dense(rstd, "RmsNormBackward"), pdx = F32Dense(dx, "RmsNormBackward");
        int c = weight.Size(0), n = checked((int)(x.Count / c)), acc = accumulateDx ? 1 : 0;
        if (n == 0) return;
        Launch(CudaModule.RmsNorm, CudaKernelNames.RmsNormBackwardDx, CudaLaunch.PerRow(n, c),
            (IntPtr)(&pdy), (IntPtr)(&px), (IntPtr)(&pw), (IntPtr)(&pr), (IntPtr)(&pdx), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&acc));
        if (dweight == null) return;
        // dw: per-chunk partial sums (the CPU's chunking), then added into dw in chunk order (dw accumulates, as on the CPU).
        var (rowsPerChunk, chunks) = CudaLaunch.RmsNormDwChunks(n);
        var partials = Scratch((long)chunks * c * sizeof(float));
        ulong pp = partials.Pointer, pdw = F32Dense(dweight, "RmsNormBackward"), none = 0;
        int one = 1;
        Launch(CudaModule.RmsNorm, CudaKernelNames.RmsNormBackwardDw, CudaLaunch.PerColumn(c, chunks),
            (IntPtr)(&pdy), (IntPtr)(&px), (IntPtr)(&pr), (IntPtr)(&pp), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&rowsPerChunk));
        Launch(CudaModule.Elementwise, CudaKernelNames.ColumnSum, CudaLaunch.PerColumn(c),
            (IntPtr)(&pp), (IntPtr)(&none), (IntPtr)(&pdw), (IntPtr)(&chunks), (IntPtr)(&c), (IntPtr)(&one));
        Release(partials);
    }

    public void SiluForward(Tensor x, Tensor y)
    {
        ulong px = F32Dense(x, "Silu"), py = F32Dense(y, "Silu");
        long n = x.Count;
        Launch(CudaModule.SwiGlu, CudaKernelNames.SiluForward, CudaLaunch.Elementwise(n, Sms), (IntPtr)(&px), (IntPtr)(&py), (IntPtr)(&n));
    }

    public void SiluBackward(Tensor dy, Tensor x, Tensor dx, bool accumulate)
    {
        ulong pdy = F32Dense(dy, "SiluBackward"), px = F32Dense(x, "SiluBackward"), pdx = F32Dense(dx, "SiluBackward");
        long n = x.Count;
        int acc = accumulate ? 1 : 0;
        Launch(CudaModule.SwiGlu, CudaKernelNames.SiluBackward, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&pdy), (IntPtr)(&px), (IntPtr)(&pdx), (IntPtr)(&n), (IntPtr)(&acc));
    }

    public void SwiGluForward(Tensor gate, Tensor up, Tensor y)
    {
        ulong pg = F32Dense(gate, "SwiGlu"), pu = F32Dense(up, "SwiGlu"), py = F32Dense(y, "SwiGlu");
        long n = gate.Count;
        Launch(CudaModule.SwiGlu, CudaKernelNames.SwiGluForward, CudaLaunch.Elementwise(n, Sms), (IntPtr)(&pg), (IntPtr)(&pu), (IntPtr)(&py), (IntPtr)(&n));
    }

    public void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dgate, Tensor dup, bool accumulate)
    {
        ulong pdy = F32Dense(dy, "SwiGluBackward"), pg = F32Dense(gate, "SwiGluBackward"), pu = F32Dense(up, "SwiGluBackward");
        ulong pdg = F32Dense(dgate, "SwiGluBackward"), pdu = F32Dense(dup, "SwiGluBackward");
        long n = gate.Count;
        int acc = accumulate ? 1 : 0;
        Launch(CudaModule.SwiGlu, CudaKernelNames.SwiGluBackward, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&pdy), (IntPtr)(&pg), (IntPtr)(&pu), (IntPtr)(&pdg), (IntPtr)(&pdu), (IntPtr)(&n), (IntPtr)(&acc));
    }

    public void Rope(Tensor x, Tensor y, int positionOffset, float theta, bool interleaved, bool inverse)
    {
        ulong px = F32Dense(x, "Rope"), py = F32Dense(y, "Rope");
        int b = x.Size(0), t = x.Size(1), h = x.Size(2), d = x.Size(3), il = interleaved ? 1 : 0, inv = inverse ? 1 : 0;
        Launch(CudaModule.Rope, CudaKernelNames.Rope, CudaLaunch.Elementwise((long)b * t * h * (d / 2), Sms),
            (IntPtr)(&px), (IntPtr)(&py), (IntPtr)(&b), (IntPtr)(&t), (IntPtr)(&h), (IntPtr)(&d), (IntPtr)(&positionOffset),
            (IntPtr)(&theta), (IntPtr)(&il), (IntPtr)(&inv));
    }

    // ---- attention and softmax --------------------------------------------------------------------------

    public void AttentionForward(Tensor q, Tensor k, Tensor v, int keyLength, Tensor output, Tensor? lse, float scale)
    {
        ulong pq = F32Dense(q, "Attention"), pk = F32Dense(k, "Attention"), pv = F32Dense(v, "Attention"), po = F32Dense(output, "Attention");
        ulong pl = lse == null ? 0 : F32Dense(lse, "Attention");
        int b = q.Size(0), tq = q.Size(1), tk = keyLength, cap = k.Size(1), hq = q.Size(2), hkv = k.Size(2), d = q.Size(3);
        Launch(CudaModule.Attention, CudaKernelNames.AttentionForward, CudaLaunch.AttentionForward(b, tq, hq, d),
            (IntPtr)(&pq), (IntPtr)(&pk), (IntPtr)(&pv), (IntPtr)(&po), (IntPtr)(&pl), (IntPtr)(&b), (IntPtr)(&tq), (IntPtr)(&tk),
            (IntPtr)(&cap), (IntPtr)(&hq), (IntPtr)(&hkv), (IntPtr)(&d), (IntPtr)(&scale));
    }

    public void AttentionBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse,
        Tensor dq, Tensor dk, Tensor dv, float scale)
    {
        ulong pdo = F32Dense(dout, "AttentionBackward"), pq = F32Dense(q, "AttentionBackward"), pk = F32Dense(k, "AttentionBackward");
        ulong pv = F32Dense(v, "AttentionBackward"), po = F32Dense(output, "AttentionBackward"), pl = F32Dense(lse, "AttentionBackward");
        ulong pdq = F32Dense(dq, "AttentionBackward"), pdk = F32Dense(dk, "AttentionBackward"), pdv = F32Dense(dv, "AttentionBackward");
        int b = q.Size(0), tq = q.Size(1), tk = k.Size(1), cap = k.Size(1), hq = q.Size(2), hkv = k.Size(2), d = q.Size(3);
        var delta = Scratch((long)b * hq * tq * sizeof(float));                                        // [b, hq, tq]
        ulong pd = delta.Pointer;
        Launch(CudaModule.Attention, CudaKernelNames.AttentionBackwardDelta, CudaLaunch.AttentionDelta(b, tq, hq),
            (IntPtr)(&pdo), (IntPtr)(&po), (IntPtr)(&pd), (IntPtr)(&b), (IntPtr)(&tq), (IntPtr)(&hq), (IntPtr)(&d));
        Launch(CudaModule.Attention, CudaKernelNames.AttentionBackwardDq, CudaLaunch.AttentionBackwardDq(b, tq, hq, d),
            (IntPtr)(&pdo), (IntPtr)(&pq), (IntPtr)(&pk), (IntPtr)(&pv), (IntPtr)(&pl), (IntPtr)(&pd), (IntPtr)(&pdq), (IntPtr)(&b),
            (IntPtr)(&tq), (IntPtr)(&tk), (IntPtr)(&cap), (IntPtr)(&hq), (IntPtr)(&hkv), (IntPtr)(&d), (IntPtr)(&scale));
        Launch(CudaModule.Attention, CudaKernelNames.AttentionBackwardDkDv, CudaLaunch.AttentionBackwardDkDv(b, tk, hkv, d),
            (IntPtr)(&pdo), (IntPtr)(&pq), (IntPtr)(&pk), (IntPtr)(&pv), (IntPtr)(&pl), (IntPtr)(&pd), (IntPtr)(&pdk), (IntPtr)(&pdv),
            (IntPtr)(&b), (IntPtr)(&tq), (IntPtr)(&tk), (IntPtr)(&cap), (IntPtr)(&hq), (IntPtr)(&hkv), (IntPtr)(&d), (IntPtr)(&scale));
        Release(delta);
    }

    public void SoftmaxForward(Tensor x, Tensor y)
    {
        ulong px = F32Dense(x, "Softmax"), py = F32Dense(y, "Softmax");
        int c = x.Size(-1), n = checked((int)(x.Count / c));
        if (n == 0) return;
        Launch(CudaModule.Softmax, CudaKernelNames.SoftmaxForward, CudaLaunch.PerRow(n, c), (IntPtr)(&px), (IntPtr)(&py), (IntPtr)(&n), (IntPtr)(&c));
    }

    public void SoftmaxBackward(Tensor dy, Tensor y, Tensor dx, bool accumulate)
    {
        ulong pdy = F32Dense(dy, "SoftmaxBackward"), py = F32Dense(y, "SoftmaxBackward"), pdx = F32Dense(dx, "SoftmaxBackward");
        int c = y.Size(-1), n = checked((int)(y.Count / c)), acc = accumulate ? 1 : 0;
        if (n == 0) return;
        Launch(CudaModule.Softmax, CudaKernelNames.SoftmaxBackward, CudaLaunch.PerRow(n, c),
            (IntPtr)(&pdy), (IntPtr)(&py), (IntPtr)(&pdx), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&acc));
    }

    // ---- optimizers -------------------------------------------------------------------------------------

    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
        float weightDecay, float biasCorrection1, float biasCorrection2)
    {
        ulong pp = F32Dense(param, "AdamW"), pg = F32Dense(grad, "AdamW"), pm = F32Dense(m, "AdamW"), pv = F32Dense(v, "AdamW");
        long n = param.Count;
        // The host-side scalars of CpuBackend.AdamWStep, in its order.
        float decay = 1f - lr * weightDecay, stepSize = lr / biasCorrection1, invSqrtBc2 = 1f / MathF.Sqrt(biasCorrection2);
        Launch(CudaModule.AdamW, CudaKernelNames.AdamW, CudaLaunch.Elementwise(n, Sms),
            (IntPtr)(&pp), (IntPtr)(&pg), (IntPtr)(&pm), (IntPtr)(&pv), (IntPtr)(&n), (IntPtr)(&beta1), (IntPtr)(&beta2), (IntPtr)(&eps),
            (IntPtr)(&decay), (IntPtr)(&stepSize), (IntPtr)(&invSqrtBc2));
    }

    /// <summary>One AdamW update of many tensors in a single launch (per-tensor learning rate and decay for LoRA+ groups).</summary>
    public void AdamWMultiStep(IReadOnlyList<AdamWTensor> tensors, float beta1, float beta2, float eps, float biasCorrection1, float biasCorrection2)
    {
        if (tensors.Count == 0) return;
        var (entries, total) = CudaArgs.AdamWMulti(tensors, biasCorrection1);
        var table = _ctx.Upload<AdamTensorArgs>(entries);
        ulong pt = table.Pointer;
        int count = entries.Length, chunk = CudaLaunch.AdamWChunk;
        float invSqrtBc2 = 1f / MathF.Sqrt(biasCorrection2);
        Launch(CudaModule.AdamW, CudaKernelNames.AdamWMulti, new LaunchConfig(checked((int)total), 1, CudaLaunch.ElementwiseThreads),
            (IntPtr)(&pt), (IntPtr)(&count), (IntPtr)(&chunk), (IntPtr)(&beta1), (IntPtr)(&beta2), (IntPtr)(&eps), (IntPtr)(&invSqrtBc2));
        Release(table);
    }

    /// <summary>
    /// One 8-bit blockwise AdamW update (AdamW8bit's layout at <paramref name="state"/>: absmax m, absmax v, codes m,
    /// codes v) of a contiguous float32 parameter.
    /// </summary>
    public void AdamW8bitStep(Tensor param, Tensor grad, ulong state, int blocks, float lr, float beta1, float beta2, float eps,
        float weightDecay, float biasCorrection1, float biasCorrection2)
    {
        ulong pp = F32Dense(param, "AdamW8bit"), pg = F32Dense(grad, "AdamW8bit");
        long n = param.Count;
        var (oAbsM, oAbsV, oCodesM, oCodesV) = CudaArgs.AdamW8bitOffsets(n, blocks);
        ulong absM = state + (ulong)oAbsM, absV = state + (ulong)oAbsV, codesM = state + (ulong)oCodesM, codesV = state + (ulong)oCodesV;
        EnsureDynamicMaps();
        ulong smap = _signedMap!.Value.Pointer, umap = _unsignedMap!.Value.Pointer;
        float decay = 1f - lr * weightDecay, stepSize = lr / biasCorrection1, invSqrtBc2 = 1f / MathF.Sqrt(biasCorrection2);
        Launch(CudaModule.AdamW, CudaKernelNames.AdamW8bit, CudaLaunch.AdamW8bit(n),
            (IntPtr)(&pp), (IntPtr)(&pg), (IntPtr)(&codesM), (IntPtr)(&codesV), (IntPtr)(&absM), (IntPtr)(&absV), (IntPtr)(&smap), (IntPtr)(&umap),
            (IntPtr)(&n), (IntPtr)(&beta1), (IntPtr)(&beta2), (IntPtr)(&eps), (IntPtr)(&decay), (IntPtr)(&stepSize), (IntPtr)(&invSqrtBc2));
    }

    // The runtime's optimizers reach the two kernels above through IOptimizerKernels, with tensors and the state storage
    // that CudaDeviceProvider.AllocateHostVisible gave them; the addresses are taken here.

    void IOptimizerKernels.AdamWMultiStep(IReadOnlyList<AdamWUpdate> updates, float beta1, float beta2, float eps, float biasCorrection1,
        float biasCorrection2)
    {
        _ctx.MakeCurrent();
        var tensors = new AdamWTensor[updates.Count];
        for (int i = 0; i < tensors.Length; i++)
        {
            var u = updates[i];
            tensors[i] = new AdamWTensor(CudaStorage.AddressOf(u.Param), CudaStorage.AddressOf(u.Grad), CudaStorage.AddressOf(u.M),
                CudaStorage.AddressOf(u.V), u.Param.Count, u.Lr, u.WeightDecay);
        }
        AdamWMultiStep(tensors, beta1, beta2, eps, biasCorrection1, biasCorrection2);
    }

    void IOptimizerKernels.AdamW8bitStep(Tensor param, Tensor grad, HostStorage state, int blocks, float lr, float beta1, float beta2,
        float eps, float weightDecay, float biasCorrection1, float biasCorrection2)
    {
        ulong address = (state as CudaHostVisibleStorage)?.DeviceAddress
            ?? throw new InvalidOperationException("This 8-bit optimizer state is in host memory; its parameter is not on a GPU.");
        AdamW8bitStep(param, grad, address, blocks, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
    }

    private void EnsureDynamicMaps()
    {
        lock (_weightLock)
        {
            _signedMap ??= _ctx.Upload(DynamicMap.Signed);
            _unsignedMap ??= _ctx.Upload(DynamicMap.Unsigned);
        }
    }

    // ---- loss -------------------------------------------------------------------------------------------

    public void CrossEntropyForward(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, Tensor lse)
    {
        int n = logits.Size(0), v = logits.Size(1);
        if (n == 0) return;
        var gt = UploadInts(targets);
        ulong pl = F32Dense(logits, "CrossEntropy"), pt = gt.Pointer, pls = F32Dense(losses, "CrossEntropy"), plse = F32Dense(lse, "CrossEntropy");
        Launch(CudaModule.CrossEntropy, CudaKernelNames.CrossEntropyForward, CudaLaunch.PerRow(n, v),
            (IntPtr)(&pl), (IntPtr)(&pt), (IntPtr)(&pls), (IntPtr)(&plse), (IntPtr)(&n), (IntPtr)(&v), (IntPtr)(&ignoreIndex));
        Release(gt);
    }

    public void CrossEntropyBackward(Tensor logits, Tensor lse, ReadOnlySpan<int> targets, int ignoreIndex, float gradScale, Tensor dlogits)
    {
        int n = logits.Size(0), v = logits.Size(1);
        if (n == 0) return;
        var gt = UploadInts(targets);
        ulong pl = F32Dense(logits, "CrossEntropyBackward"), plse = F32Dense(lse, "CrossEntropyBackward"), pt = gt.Pointer;
        ulong pd = F32Dense(dlogits, "CrossEntropyBackward");
        Launch(CudaModule.CrossEntropy, CudaKernelNames.CrossEntropyBackward, CudaLaunch.CrossEntropyBackward(n, v),
            (IntPtr)(&pl), (IntPtr)(&plse), (IntPtr)(&pt), (IntPtr)(&pd), (IntPtr)(&n), (IntPtr)(&v), (IntPtr)(&ignoreIndex), (IntPtr)(&gradScale));
        Release(gt);
    }

    // ---- 4-bit linear -----------------------------------------------------------------------------------

    public void Linear4BitForward(Tensor x, QuantizedWeight weight, Tensor y)
    {
        var w = DeviceWeight(weight);
        int inF = weight.Columns, outF = weight.Rows, rows = checked((int)(x.Count / inF));
        if (rows == 0) return;
        ulong px = F32Dense(x, "Linear4Bit"), py = F32Dense(y, "Linear4Bit");
        var args = w.Args;
        if (rows <= CudaLaunch.GemvMaxRows)
        {
            // Few rows (decoding): decode each weight once for all rows, in float32.
            int acc = 0;
            Launch(CudaModule.Quant4Bit, CudaKernelNames.Dequant4BitGemv, CudaLaunch.Dequant4BitGemv(outF),
                (IntPtr)(&args), (IntPtr)(&px), (IntPtr)(&py), (IntPtr)(&rows), (IntPtr)(&outF), (IntPtr)(&inF), (IntPtr)(&acc));
            return;
        }
        var wb = DequantizeBf16(weight, args);                                                         // [out, in] bf16
        Bf16LinearForward(wb.Pointer, px, py, rows, outF, inF);
        Release(wb);
    }

    public void Linear4BitBackwardInput(Tensor dy, QuantizedWeight weight, Tensor dx, bool accumulate)
    {
        var w = DeviceWeight(weight);
        int inF = weight.Columns, outF = weight.Rows, rows = checked((int)(dx.Count / inF));
        if (rows == 0) return;
        ulong pdy = F32Dense(dy, "Linear4BitBackward"), pdx = F32Dense(dx, "Linear4BitBackward");
        var wb = DequantizeBf16(weight, w.Args);                                                       // [out, in] bf16
        Bf16LinearBackwardInput(wb.Pointer, pdy, pdx, rows, outF, inF, accumulate);
        Release(wb);
    }

    /// <summary>
    /// y [rows, out] = x [rows, in] · W [out, in]ᵀ for a bf16 weight at <paramref name="wb"/>: x is rounded to bf16 and
    /// cuBLAS multiplies bf16 × bf16 with float32 accumulation (the frozen 4-bit and 16-bit bases).
    /// </summary>
    private void Bf16LinearForward(ulong wb, ulong px, ulong py, int rows, int outF, int inF)
    {
        var xb = ToBf16(px, (long)rows * inF);                                                          // [rows, in] bf16
        var call = CudaGemmPlan.Plan(false, true, rows, outF, inF, inF, 0, inF, 0, outF, 0, 1, CudaGemmPrecision.Float32);
        RunGemm(call, wb, xb.Pointer, py, Cublas.DataR16BF, 1f, 0f);
        Release(xb);
    }

    /// <summary>dx [rows, in] (+)= dy [rows, out] · W [out, in] for a bf16 weight at <paramref name="wb"/>, bf16 × bf16 → float32.</summary>
    private void Bf16LinearBackwardInput(ulong wb, ulong pdy, ulong pdx, int rows, int outF, int inF, bool accumulate)
    {
        var gb = ToBf16(pdy, (long)rows * outF);                                                        // [rows, out] bf16
        var call = CudaGemmPlan.Plan(false, false, rows, inF, outF, outF, 0, inF, 0, inF, 0, 1, CudaGemmPrecision.Float32);
        RunGemm(call, wb, gb.Pointer, pdx, Cublas.DataR16BF, 1f, accumulate ? 1f : 0f);
        Release(gb);
    }

    // ---- 16-bit linear and dtype conversion ---------------------------------------------------------------

    public void Linear16Forward(Tensor x, Tensor weight16, Tensor y)
    {
        int outF = weight16.Size(0), inF = weight16.Size(1), rows = checked((int)(x.Count / inF));
        if (rows == 0) return;
        ulong px = F32Dense(x, "Linear16"), py = F32Dense(y, "Linear16");
        var (wb, scratch) = Bf16Weight(weight16, "Linear16");                                          // [out, in] bf16
        Bf16LinearForward(wb, px, py, rows, outF, inF);
        if (scratch is DeviceBlock block) Release(block);
    }

    public void Linear16BackwardInput(Tensor dy, Tensor weight16, Tensor dx, bool accumulate)
    {
        int outF = weight16.Size(0), inF = weight16.Size(1), rows = checked((int)(dx.Count / inF));
        if (rows == 0) return;
        ulong pdy = F32Dense(dy, "Linear16Backward"), pdx = F32Dense(dx, "Linear16Backward");
        var (wb, scratch) = Bf16Weight(weight16, "Linear16Backward");                                  // [out, in] bf16
        Bf16LinearBackwardInput(wb, pdy, pdx, rows, outF, inF, accumulate);
        if (scratch is DeviceBlock block) Release(block);
    }

    /// <summary>
    /// A 16-bit weight as the bf16 operand of the tensor-core GEMM: a bf16 weight is used where it lies; an fp16 one is
    /// rounded to bf16 in a scratch block (returned, for the caller to release after queueing the GEMM). That is the
    /// rounding the default <see cref="CudaGemmPrecision.Bf16"/> applies to float32 weights anyway, at half the scratch of
    /// widening to float32.
    /// </summary>
    private (ulong Pointer, DeviceBlock? Scratch) Bf16Weight(Tensor weight16, string op)
    {
        ulong pw = Dense16(weight16, op);
        if (weight16.DType == DType.BFloat16) return (pw, null);
        long count = weight16.Count;
        var block = Scratch(count * sizeof(ushort));
        ulong po = block.Pointer;
        Launch(CudaModule.Elementwise, CudaKernelNames.F16ToBf16, CudaLaunch.Elementwise(count, Sms), (IntPtr)(&pw), (IntPtr)(&po), (IntPtr)(&count));
        return (po, block);
    }

    public void ConvertDType(Tensor src, Tensor dst)
    {
        if (src.Count != dst.Count || !src.IsContiguous || !dst.IsContiguous)
            throw new InvalidOperationException($"CUDA ConvertDType: {src.DescribeForError()} {src.DType} → {dst.DescribeForError()} {dst.DType} needs two dense tensors of the same size.");
        if (src.DType == dst.DType)
        {
            CudaStorage.CopyBetweenDevices(src, dst);
            return;
        }
        if (src.DType != DType.Float32 && dst.DType != DType.Float32)
        {
            // bf16 ⇄ fp16 other than the direct fp16 → bf16 kernel: through float32 (exact widening, one rounding).
            if (src.DType == DType.Float16)
            {
                ConvertWith(CudaKernelNames.F16ToBf16, src, dst);
                return;
            }
            using var wide = Tensor.Create(src.ShapeArray, DType.Float32, zeroed: false, scoped: false, device: src.Device);
            ConvertDType(src, wide);
            ConvertDType(wide, dst);
            return;
        }
        string kernel = (src.DType, dst.DType) switch
        {
            (DType.Float32, DType.BFloat16) => CudaKernelNames.F32ToBf16,
            (DType.Float32, DType.Float16) => CudaKernelNames.F32ToF16,
            (DType.BFloat16, DType.Float32) => CudaKernelNames.Bf16ToF32,
            (DType.Float16, DType.Float32) => CudaKernelNames.F16ToF32,
            _ => throw new NotSupportedException($"CUDA ConvertDType: {src.DType} → {dst.DType}."),
        };
        ConvertWith(kernel, src, dst);
    }

    /// <summary>Runs elementwise conversion kernel <paramref name="kernel"/>(src, dst, n) on two dense tensors.</summary>
    private void ConvertWith(string kernel, Tensor src, Tensor dst)
    {
        ulong ps = CudaStorage.AddressOf(src), pd = CudaStorage.AddressOf(dst);
        long n = src.Count;
        if (n == 0) return;
        Launch(CudaModule.Elementwise, kernel, CudaLaunch.Elementwise(n, Sms), (IntPtr)(&ps), (IntPtr)(&pd), (IntPtr)(&n));
    }

    private DeviceBlock DequantizeBf16(QuantizedWeight weight, Quant4BitArgs args)
    {
        long count = weight.Count;
        var block = Scratch(count * sizeof(ushort));
        ulong po = block.Pointer;
        Launch(CudaModule.Quant4Bit, CudaKernelNames.Dequant4BitBf16, CudaLaunch.Elementwise((count + 1) / 2, Sms),
            (IntPtr)(&args), (IntPtr)(&po), (IntPtr)(&count));
        return block;
    }

    private DeviceBlock ToBf16(ulong source, long count)
    {
        var block = Scratch(count * sizeof(ushort));
        ulong po = block.Pointer;
        Launch(CudaModule.Elementwise, CudaKernelNames.F32ToBf16, CudaLaunch.Elementwise(count, Sms), (IntPtr)(&source), (IntPtr)(&po), (IntPtr)(&count));
        return block;
    }

    /// <summary>The device copy of a frozen 4-bit weight, uploaded on first use and kept until <see cref="Evict"/>.</summary>
    private DeviceQuantizedWeight DeviceWeight(QuantizedWeight weight)
    {
        lock (_weightLock)
        {
            if (_weights.TryGetValue(weight, out var existing)) return existing;
            var created = new DeviceQuantizedWeight(_ctx, weight);
            _weights.Add(weight, created);
            return created;
        }
    }

    /// <summary>Frees the device copy of <paramref name="weight"/> (after the work queued so far); returns whether there was one.</summary>
    public bool Evict(QuantizedWeight weight)
    {
        lock (_weightLock)
        {
            if (!_weights.TryGetValue(weight, out var existing)) return false;
            _weights.Remove(weight);
            existing.Dispose();
            return true;
        }
    }

    /// <summary>Bytes of device memory held by uploaded 4-bit weights.</summary>
    public long QuantizedWeightBytes
    {
        get
        {
            lock (_weightLock) return _weights.Sum(p => p.Value.Bytes);
        }
    }

    /// <summary>A 4-bit weight's parts in device memory.</summary>
    private sealed class DeviceQuantizedWeight : IDisposable
    {
        private readonly CudaContext _ctx;
        private readonly List<DeviceBlock> _blocks = [];

        public DeviceQuantizedWeight(CudaContext context, QuantizedWeight weight)
        {
            _ctx = context;
            ulong packed = Add(context.Upload(weight.PackedCodes));
            ulong code16 = Add(context.Upload(Codebooks.Values(weight.Type)));
            ulong absmax = 0, codes = 0, scales = 0, map = 0;
            if (weight.IsDoubleQuantized)
            {
                codes = Add(context.Upload(weight.AbsmaxCodes));
                scales = Add(context.Upload(weight.AbsmaxScales));
                map = Add(context.Upload(DynamicMap.Signed));
            }
            else
            {
                absmax = Add(context.Upload(weight.Absmax));
            }
            Args = CudaArgs.Quant4Bit(weight, packed, code16, absmax, codes, scales, map);
        }

        public Quant4BitArgs Args { get; }

        public long Bytes => _blocks.Sum(b => b.Bytes);

        private ulong Add(DeviceBlock block)
        {
            _blocks.Add(block);
            return block.Pointer;
        }

        public void Dispose()
        {
            foreach (var block in _blocks) _ctx.Allocator.Free(block);
            _blocks.Clear();
        }
    }
}
