using System.Runtime.InteropServices;
using PeftGen.Backends;
using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cuda;
using PeftGen.Quantization;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Cuda.Emulation;

/// <summary>
/// A GPU emulated on the host, behind the CUDA device type: its tensors are on <c>cuda:0</c> and live in memory of their
/// own that the host APIs refuse (<c>AsSpan</c>, <c>RawData</c>: "is on cuda:0; this operation needs a CPU tensor"),
/// exactly as real device memory; its kernels are the CPU backend's, run on host views of that memory. So the device
/// paths of the trainer, the checkpoints, the adapter files and the CLI's session (uploads, host copies, deferred
/// optimizer steps, device-drawn dropout masks) run here without a GPU, and a CPU run of the same job must give the same
/// numbers bit for bit. <see cref="Install"/> puts it behind <see cref="DeviceType.Cuda"/> until disposed; tests that
/// use it belong to <see cref="EmulatedCudaCollection"/>, which runs alone.
/// </summary>
internal sealed unsafe class EmulatedCudaDevice : IDeviceBackendProvider
{
    public static readonly Device Device = new(DeviceType.Cuda, 0);

    private readonly EmulatedBackend _backend = new();

    private EmulatedCudaDevice()
    {
    }

    /// <summary>Serves CUDA devices with a new emulated GPU until the result is disposed.</summary>
    public static IDisposable Install() => DeviceBackends.Override(new EmulatedCudaDevice());

    /// <summary>Bytes the emulated GPU holds now.</summary>
    public static long AllocatedBytes => Interlocked.Read(ref EmulatedStorage.Allocated);

    public DeviceType Type => DeviceType.Cuda;

    public void EnsureAvailable(Device device)
    {
        if (device.Index != 0) throw new DeviceNotAvailableException($"The emulated GPU is cuda:0; {device} was asked for.");
    }

    public IBackend Backend(Device device) => _backend;

    public TensorStorage Allocate(Device device, long bytes, bool zeroed) => new EmulatedStorage(device, bytes, zeroed);

    public void CopyBetweenDevices(Tensor src, Tensor dst)
    {
        if (src.Count != dst.Count || src.DType != dst.DType || !src.IsContiguous || !dst.IsContiguous)
            throw new ArgumentException("A copy between devices needs two dense tensors of the same size and dtype.");
        long bytes = src.Count * src.DType.ElementSize();
        if (bytes > 0) Buffer.MemoryCopy(Address(src), Address(dst), bytes, bytes);
    }

    public Tensor PagedZeros(Device device, int[] shape) => Tensor.Create(shape, DType.Float32, zeroed: true, scoped: false, device: device);

    public HostStorage AllocateHostVisible(Device device, long bytes, bool paged) => new CpuStorage(bytes, zeroed: true);

    /// <summary>The address of a tensor's first element, on either side.</summary>
    internal static byte* Address(Tensor t) => t.Storage switch
    {
        EmulatedStorage e => e.Pointer + t.Offset * t.DType.ElementSize(),
        _ => t.RawData,
    };

    /// <summary>A host tensor viewing the same memory as <paramref name="t"/> (same shape, strides, offset); a CPU tensor itself.</summary>
    internal static Tensor Host(Tensor t) => t.Storage is EmulatedStorage e
        ? new Tensor(new AliasStorage(e.Pointer, e.ByteLength), t.ShapeArray, t.StridesArray, t.Offset, t.DType, scoped: false)
        : t;

    internal static Tensor? HostOrNull(Tensor? t) => t == null ? null : Host(t);

    /// <summary>Device memory: native memory that is not <see cref="HostStorage"/>, so host pointers of its tensors are refused.</summary>
    private sealed class EmulatedStorage : TensorStorage
    {
        public static long Allocated;
        private byte* _pointer;

        public EmulatedStorage(Device device, long bytes, bool zeroed) : base(bytes, device)
        {
            _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
            // Fresh device memory is not zero: fill it with NaN bytes unless zeroes were asked for, so a read before a write shows.
            if (zeroed) NativeMemory.Clear(_pointer, (nuint)bytes);
            else NativeMemory.Fill(_pointer, (nuint)bytes, 0xFF);
            Interlocked.Add(ref Allocated, bytes);
        }

        public byte* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(EmulatedStorage));

        protected override void Free()
        {
            if (_pointer == null) return;
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
            Interlocked.Add(ref Allocated, -ByteLength);
        }
    }

    /// <summary>A host view of emulated device memory (the device storage owns it).</summary>
    private sealed class AliasStorage(byte* pointer, long bytes) : HostStorage(bytes)
    {
        public override byte* Pointer => pointer;

        protected override void Free()
        {
        }
    }
}

/// <summary>The CPU backend's kernels on host views of emulated device tensors; dropout masks drawn as the CUDA kernel draws them.</summary>
internal sealed class EmulatedBackend : IBackend, IOptimizerKernels, IRandomKernels
{
    private static readonly CpuBackend Cpu = CpuBackend.Instance;
    private static Tensor H(Tensor t) => EmulatedCudaDevice.Host(t);
    private static Tensor? HN(Tensor? t) => EmulatedCudaDevice.HostOrNull(t);

    public void CopyStrided(Tensor src, Tensor dst, bool accumulate) => Cpu.CopyStrided(H(src), H(dst), accumulate);
    public void Fill(Tensor dst, float value) => Cpu.Fill(H(dst), value);
    public void AddScaled(Tensor a, float alpha, Tensor b, float beta, Tensor y) => Cpu.AddScaled(H(a), alpha, H(b), beta, H(y));
    public void Mul(Tensor a, Tensor b, Tensor y, bool accumulate) => Cpu.Mul(H(a), H(b), H(y), accumulate);
    public void MulRows(Tensor a, Tensor v, Tensor y, bool accumulate) => Cpu.MulRows(H(a), H(v), H(y), accumulate);
    public void SumRowsOfProduct(Tensor g, Tensor a, Tensor dst, bool accumulate) => Cpu.SumRowsOfProduct(H(g), H(a), H(dst), accumulate);
    public void Scale(Tensor x, float s, Tensor y, bool accumulate) => Cpu.Scale(H(x), s, H(y), accumulate);
    public void SumRows(Tensor src, Tensor dst, bool accumulate) => Cpu.SumRows(H(src), H(dst), accumulate);
    public double Sum(Tensor x) => Cpu.Sum(H(x));

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, Tensor a, int lda, long strideA, Tensor b, int ldb, long strideB,
        float beta, Tensor c, int ldc, long strideC, int batch) =>
        Cpu.Gemm(transA, transB, m, n, k, alpha, H(a), lda, strideA, H(b), ldb, strideB, beta, H(c), ldc, strideC, batch);

    public void EmbeddingForward(Tensor weight, ReadOnlySpan<int> ids, Tensor y) => Cpu.EmbeddingForward(H(weight), ids, H(y));
    public void EmbeddingBackward(Tensor dy, ReadOnlySpan<int> ids, Tensor dweight) => Cpu.EmbeddingBackward(H(dy), ids, H(dweight));
    public void RmsNormForward(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps) => Cpu.RmsNormForward(H(x), H(weight), H(y), H(rstd), eps);

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dweight, bool accumulateDx) =>
        Cpu.RmsNormBackward(H(dy), H(x), H(weight), H(rstd), H(dx), HN(dweight), accumulateDx);

    public void SiluForward(Tensor x, Tensor y) => Cpu.SiluForward(H(x), H(y));
    public void SiluBackward(Tensor dy, Tensor x, Tensor dx, bool accumulate) => Cpu.SiluBackward(H(dy), H(x), H(dx), accumulate);
    public void SwiGluForward(Tensor gate, Tensor up, Tensor y) => Cpu.SwiGluForward(H(gate), H(up), H(y));

    public void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dgate, Tensor dup, bool accumulate) =>
        Cpu.SwiGluBackward(H(dy), H(gate), H(up), H(dgate), H(dup), accumulate);

    public void Rope(Tensor x, Tensor y, int positionOffset, float theta, bool interleaved, bool inverse) =>
        Cpu.Rope(H(x), H(y), positionOffset, theta, interleaved, inverse);

    public void AttentionForward(Tensor q, Tensor k, Tensor v, int keyLength, Tensor output, Tensor? lse, float scale) =>
        Cpu.AttentionForward(H(q), H(k), H(v), keyLength, H(output), HN(lse), scale);

    public void AttentionBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse, Tensor dq, Tensor dk, Tensor dv, float scale) =>
        Cpu.AttentionBackward(H(dout), H(q), H(k), H(v), H(output), H(lse), H(dq), H(dk), H(dv), scale);

    public void SoftmaxForward(Tensor x, Tensor y) => Cpu.SoftmaxForward(H(x), H(y));
    public void SoftmaxBackward(Tensor dy, Tensor y, Tensor dx, bool accumulate) => Cpu.SoftmaxBackward(H(dy), H(y), H(dx), accumulate);
    public double SumSquares(Tensor x) => Cpu.SumSquares(H(x));

    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps, float weightDecay,
        float biasCorrection1, float biasCorrection2) =>
        Cpu.AdamWStep(H(param), H(grad), H(m), H(v), lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);

    public void CrossEntropyForward(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, Tensor lse) =>
        Cpu.CrossEntropyForward(H(logits), targets, ignoreIndex, H(losses), H(lse));

    public void CrossEntropyBackward(Tensor logits, Tensor lse, ReadOnlySpan<int> targets, int ignoreIndex, float gradScale, Tensor dlogits) =>
        Cpu.CrossEntropyBackward(H(logits), H(lse), targets, ignoreIndex, gradScale, H(dlogits));

    // The CPU's fused kernel (one exp per logit), so the emulated device trains bit for bit as the CPU does; CudaBackend
    // itself takes IBackend's default (its forward and backward kernels in turn).
    public void CrossEntropyWithGradient(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, float gradScale) =>
        Cpu.CrossEntropyWithGradient(H(logits), targets, ignoreIndex, H(losses), gradScale);

    // Likewise the CPU's head and loss that never stores the logits; CudaBackend takes IBackend's materialising default.
    public void LinearCrossEntropy(Tensor x, Tensor weight, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, Tensor? inputGradient,
        float gradScale) => Cpu.LinearCrossEntropy(H(x), H(weight), targets, ignoreIndex, H(losses), EmulatedCudaDevice.HostOrNull(inputGradient), gradScale);

    public void Linear4BitForward(Tensor x, QuantizedWeight weight, Tensor y) => Cpu.Linear4BitForward(H(x), weight, H(y));

    public void Linear4BitBackwardInput(Tensor dy, QuantizedWeight weight, Tensor dx, bool accumulate) =>
        Cpu.Linear4BitBackwardInput(H(dy), weight, H(dx), accumulate);

    public void Linear16Forward(Tensor x, Tensor weight16, Tensor y) => Cpu.Linear16Forward(H(x), H(weight16), H(y));

    public void Linear16BackwardInput(Tensor dy, Tensor weight16, Tensor dx, bool accumulate) =>
        Cpu.Linear16BackwardInput(H(dy), H(weight16), H(dx), accumulate);

    public void ConvertDType(Tensor src, Tensor dst) => Cpu.ConvertDType(H(src), H(dst));

    // The deferred multi-tensor step of AdamW's GPU path, one CPU step per tensor (the same arithmetic).
    public void AdamWMultiStep(IReadOnlyList<AdamWUpdate> updates, float beta1, float beta2, float eps, float biasCorrection1, float biasCorrection2)
    {
        foreach (var u in updates)
            Cpu.AdamWStep(H(u.Param), H(u.Grad), H(u.M), H(u.V), u.Lr, beta1, beta2, eps, u.WeightDecay, biasCorrection1, biasCorrection2);
    }

    public void AdamW8bitStep(Tensor param, Tensor grad, HostStorage state, int blocks, float lr, float beta1, float beta2, float eps,
        float weightDecay, float biasCorrection1, float biasCorrection2) =>
        throw new NotSupportedException("The emulated GPU has no 8-bit optimizer kernel.");

    public void DropoutMask(Tensor mask, float p, float keep, ulong seed) => CudaDropout.Fill(H(mask).AsSpan(), p, keep, seed);
}

/// <summary>Tests that put the emulated GPU behind the CUDA device type: they run alone, after the parallel ones.</summary>
[CollectionDefinition(nameof(EmulatedCudaCollection), DisableParallelization = true)]
public sealed class EmulatedCudaCollection
{
}
