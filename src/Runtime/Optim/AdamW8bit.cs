using PeftGen.Backends;
using PeftGen.Backends.Cpu;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>
/// AdamW with 8-bit block-wise quantized moments (bitsandbytes' <c>AdamW8bit</c>, Dettmers et al. 2022): the
/// first moment is stored as 8-bit codes of the signed dynamic map and the second as codes of the unsigned one
/// (<see cref="DynamicMap"/>), each with one float32 absolute maximum per block of <see cref="BlockSize"/>
/// elements: 2 + 8/256 bytes of state per parameter instead of 8. Tensors with fewer than
/// <see cref="MinElementsFor8Bit"/> elements keep float32 moments and are updated exactly like <see cref="AdamW"/>.
/// </summary>
/// <remarks>
/// Each step, per block: dequantize m and v, take the <see cref="AdamW"/> update in float32 with the same formula
/// and operation order (decay p ← p·(1 − lr·λ) first, then p −= lr/bc1 · m / (√v/√bc2 + ε)), using the
/// unquantized new moments, then requantize them against the block's new absolute maximum. As in bitsandbytes a
/// negative first moment never rounds to 0: it keeps the smallest negative code, so momentum does not lose its
/// sign. Unlike bitsandbytes, weight decay is applied before the Adam step (PyTorch's order, shared with
/// <see cref="AdamW"/>; bitsandbytes scales after it, an O(lr²·λ) difference) and non-finite gradients are not
/// skipped (a NaN poisons its block's moments, as it poisons a float32 moment). Blocks are independent, so the
/// result does not depend on the thread count. Runs on the CPU, and on a GPU through its backend's 8-bit kernel
/// (<see cref="IOptimizerKernels.AdamW8bitStep"/>, with the state in host-visible device memory).
/// <para>
/// Known limit of the scheme (bitsandbytes' too): v spans the square of m's dynamic range, so an element whose
/// gradient is below about 4e-4 of the largest in its block has v/absmax under half the unsigned map's smallest
/// step and stores v = 0 while its m survives. If its gradient then shrinks, m/√v is no longer bounded by the
/// history and the step can be many times lr. Blocks of similar gradient magnitude (the usual case within a weight
/// row) stay clear of it.
/// </para>
/// </remarks>
public sealed unsafe class AdamW8bit : AdamWBase
{
    /// <summary>Tensors with fewer elements keep float32 moments (bitsandbytes' <c>min_8bit_size</c>).</summary>
    public const int MinElementsFor8Bit = 4096;

    /// <summary>Elements sharing one absolute maximum (bitsandbytes' 8-bit optimizer block).</summary>
    public const int BlockSize = 256;

    // 16 blocks (4096 elements) per work item keeps the per-range overhead small next to the update.
    private const int MinBlocksPerThread = 16;

    /// <summary>Creates an optimizer over one group of parameters.</summary>
    /// <remarks>
    /// <paramref name="paged"/> keeps the state in file-backed memory the OS can page out (see
    /// <see cref="AdamWBase.Paged"/>); the arithmetic is the same either way.
    /// </remarks>
    public AdamW8bit(IEnumerable<Tensor> parameters, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 0.01f, bool paged = false)
        : this([new ParameterGroup((parameters ?? throw new ArgumentNullException(nameof(parameters))).ToList())],
            learningRate, beta1, beta2, eps, weightDecay, paged)
    {
    }

    /// <summary>Creates an optimizer over several parameter groups (contiguous tensors on the CPU, or on a GPU whose backend has the 8-bit kernel).</summary>
    /// <remarks>
    /// <paramref name="paged"/> keeps the state in file-backed memory the OS can page out (see
    /// <see cref="AdamWBase.Paged"/>); the arithmetic is the same either way.
    /// </remarks>
    public AdamW8bit(IEnumerable<ParameterGroup> groups, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 0.01f, bool paged = false)
        : base(groups, learningRate, beta1, beta2, eps, weightDecay, paged)
    {
        foreach (var p in Parameters)
            if (p.Device.Type != DeviceType.Cpu && Backend.Of(p) is not IOptimizerKernels)
                throw new ArgumentException($"AdamW8bit updates CPU tensors and tensors of a backend with 8-bit optimizer kernels; {p.DescribeForError()} is on {p.Device}.", nameof(groups));
    }

    private protected override string StateKind => "AdamW8bit";

    private protected override void WriteLayout(BinaryWriter writer)
    {
        writer.Write(BlockSize);
        writer.Write(MinElementsFor8Bit);
    }

    private protected override void ReadLayout(BinaryReader reader)
    {
        int blockSize = reader.ReadInt32();
        int minElements = reader.ReadInt32();
        if (blockSize != BlockSize || minElements != MinElementsFor8Bit)
            throw new InvalidDataException($"Optimizer state uses block size {blockSize} and 8-bit minimum {minElements}; this optimizer uses {BlockSize} and {MinElementsFor8Bit}.");
    }

    private protected override OptimizerMoments CreateMoments(Tensor p) =>
        p.Count >= MinElementsFor8Bit ? new QuantizedMoments(p, Paged) : new FullMoments(p, Paged);

    private protected override void Update(Tensor p, Tensor grad, OptimizerMoments moments, float lr, float weightDecay, float bc1, float bc2)
    {
        switch (moments)
        {
            case FullMoments full:
                Backend.Of(p).AdamWStep(p, grad, full.M, full.V, lr, Beta1, Beta2, Eps, weightDecay, bc1, bc2);
                break;
            case QuantizedMoments quantized:
                QuantizedStep(p, grad, quantized, lr, weightDecay, bc1, bc2);
                break;
        }
    }

    private void QuantizedStep(Tensor param, Tensor grad, QuantizedMoments state, float lr, float weightDecay, float bc1, float bc2)
    {
        if (grad.Count != param.Count || !grad.IsContiguous)
            throw new InvalidOperationException($"The gradient of {param.DescribeForError()} is a {(grad.IsContiguous ? "" : "strided ")}{grad.DescribeForError()}; AdamW8bit needs a contiguous one of the parameter's size.");
        if (param.Device.Type != DeviceType.Cpu)
        {
            // The same update in one kernel launch over the state in host-visible GPU memory.
            if (Backend.Of(param) is not IOptimizerKernels kernels)
                throw new NotSupportedException($"AdamW8bit: the backend of {param.Device} has no 8-bit optimizer kernel; {param.DescribeForError()} cannot be updated there.");
            kernels.AdamW8bitStep(param, grad, state.Storage, state.Blocks, lr, Beta1, Beta2, Eps, weightDecay, bc1, bc2);
            return;
        }
        float* p = param.Data, g = grad.Data;
        float* absmaxM = state.AbsmaxM, absmaxV = state.AbsmaxV;
        byte* codesM = state.CodesM, codesV = state.CodesV;
        int n = checked((int)param.Count);
        float beta1 = Beta1, beta2 = Beta2, eps = Eps;
        // The same scalars, in the same order, as the float32 kernel (CpuBackend.AdamWStep).
        float decay = 1f - lr * weightDecay;
        float stepSize = lr / bc1;
        float invSqrtBc2 = 1f / MathF.Sqrt(bc2);
        CpuParallel.ForRange(state.Blocks, MinBlocksPerThread, (firstBlock, endBlock) =>
        {
            var signedMap = DynamicMap.Signed;
            var unsignedMap = DynamicMap.Unsigned;
            Span<float> m = stackalloc float[BlockSize]; // [BlockSize] new first moments of the block, float32
            Span<float> v = stackalloc float[BlockSize]; // [BlockSize] new second moments of the block, float32
            for (int b = firstBlock; b < endBlock; b++)
            {
                int start = b * BlockSize;
                int length = Math.Min(BlockSize, n - start);
                float scaleM = absmaxM[b], scaleV = absmaxV[b];
                for (int i = 0; i < length; i++)
                {
                    int k = start + i;
                    float gi = g[k];
                    float mi = m[i] = beta1 * (signedMap[codesM[k]] * scaleM) + (1f - beta1) * gi;
                    float vi = v[i] = beta2 * (unsignedMap[codesV[k]] * scaleV) + (1f - beta2) * gi * gi;
                    p[k] = p[k] * decay - stepSize * mi / (MathF.Sqrt(vi) * invSqrtBc2 + eps);
                }
                var blockCodesM = new Span<byte>(codesM + start, length);
                absmaxM[b] = DynamicMap.QuantizeBlock(m[..length], blockCodesM, signedMap);
                absmaxV[b] = DynamicMap.QuantizeBlock(v[..length], new Span<byte>(codesV + start, length), unsignedMap);
                // bitsandbytes keeps the sign of momentum: a negative m that rounded to the zero code takes the
                // smallest negative code instead (a positive m can only round to zero or above, both non-negative).
                // Branch-free: the sign of m is random, so a branch on it would mispredict half the time.
                for (int i = 0; i < length; i++)
                    blockCodesM[i] -= (byte)((m[i] < 0f) & (blockCodesM[i] == DynamicMap.SignedZeroCode) ? 1 : 0);
            }
        });
    }

    /// <summary>
    /// 8-bit m and v of one tensor in a single zero-filled buffer:
    /// absmax of m [blocks] f32 | absmax of v [blocks] f32 | codes of m [n] u8 | codes of v [n] u8.
    /// All-zero is the initial state: every block scale is 0, so every code decodes to 0.
    /// </summary>
    private sealed class QuantizedMoments : OptimizerMoments
    {
        private readonly HostStorage _storage;

        public QuantizedMoments(Tensor p, bool paged)
        {
            Count = p.Count;
            Blocks = DynamicMap.BlockCount(Count, BlockSize);
            long bytes = 2L * Blocks * sizeof(float) + 2 * Count;
            // On a GPU the state is host-visible device memory (managed, or mapped host memory when paged past the budget).
            _storage = p.Device.Type != DeviceType.Cpu ? DeviceBackends.Provider(p.Device).AllocateHostVisible(p.Device, bytes, paged)
                : paged ? new MappedStorage(bytes) : new CpuStorage(bytes, zeroed: true);
        }

        /// <summary>The state's memory (for GPU kernels: host-visible device memory from the parameter's backend).</summary>
        public HostStorage Storage => _storage;

        public long Count { get; }

        public int Blocks { get; }

        public float* AbsmaxM => (float*)_storage.Pointer;

        public float* AbsmaxV => AbsmaxM + Blocks;

        public byte* CodesM => (byte*)(AbsmaxV + Blocks);

        public byte* CodesV => CodesM + Count;

        public override long Bytes => _storage.ByteLength;

        public override void Write(Stream stream) => WriteBytes(stream, _storage.Pointer, _storage.ByteLength);

        public override void Read(Stream stream) => ReadBytes(stream, _storage.Pointer, _storage.ByteLength);

        public override void Dispose()
        {
            if (!_storage.IsReleased) _storage.Release();
        }
    }
}
