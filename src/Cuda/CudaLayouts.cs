using System.Runtime.InteropServices;
using PeftGen.Quantization;

namespace PeftGen.Backends.Cuda;

/// <summary>elementwise.cu's <c>StridedLayout</c>, passed by value: shape and both stride sets, outermost first.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct StridedLayout
{
    /// <summary>The most dimensions a strided copy takes (<c>PEFT_MAX_RANK</c>).</summary>
    public const int MaxRank = 8;

    /// <summary>Sizes; unused dimensions 1.</summary>
    public fixed long Size[MaxRank];

    /// <summary>Source strides, elements.</summary>
    public fixed long Src[MaxRank];

    /// <summary>Destination strides, elements.</summary>
    public fixed long Dst[MaxRank];

    /// <summary>
    /// The layout of a copy of <paramref name="shape"/> between views with <paramref name="srcStrides"/> and
    /// <paramref name="dstStrides"/>, and the rank to pass (a rank-0 tensor is one element of rank 1). Size-1 dimensions
    /// are dropped and neighbours that are contiguous in both views merged, so most copies have rank 1 or 2.
    /// </summary>
    /// <exception cref="NotSupportedException">More than eight dimensions remain after merging.</exception>
    public static (StridedLayout Layout, int Rank) Of(ReadOnlySpan<int> shape, ReadOnlySpan<long> srcStrides, ReadOnlySpan<long> dstStrides)
    {
        var sizes = new List<long>();
        var src = new List<long>();
        var dst = new List<long>();
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] == 1) continue;
            int last = sizes.Count - 1;
            if (last >= 0 && src[last] == srcStrides[d] * shape[d] && dst[last] == dstStrides[d] * shape[d])
            {
                // The outer dimension steps exactly over this one in both views: one dimension of the product's size.
                sizes[last] *= shape[d];
                src[last] = srcStrides[d];
                dst[last] = dstStrides[d];
                continue;
            }
            sizes.Add(shape[d]);
            src.Add(srcStrides[d]);
            dst.Add(dstStrides[d]);
        }
        if (sizes.Count == 0)
        {
            sizes.Add(1);
            src.Add(1);
            dst.Add(1);
        }
        if (sizes.Count > MaxRank)
            throw new NotSupportedException($"The CUDA strided copy takes at most {MaxRank} dimensions after merging; this view has {sizes.Count} (shape [{string.Join(", ", shape.ToArray())}]). Make it contiguous in fewer steps.");
        var layout = new StridedLayout();
        for (int d = 0; d < MaxRank; d++)
        {
            bool used = d < sizes.Count;
            layout.Size[d] = used ? sizes[d] : 1;
            layout.Src[d] = used ? src[d] : 0;
            layout.Dst[d] = used ? dst[d] : 0;
        }
        return (layout, sizes.Count);
    }
}

/// <summary>quant4bit.cu's <c>Quant4Bit</c>, passed by value: device addresses of a 4-bit weight's parts.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Quant4BitArgs
{
    /// <summary>Packed codes, two per byte.</summary>
    public ulong Packed;
    /// <summary>The 16 values of the code book.</summary>
    public ulong Code16;
    /// <summary>Float32 block scales, or 0 when double-quantized.</summary>
    public ulong Absmax;
    /// <summary>Dynamic-map codes of the block scales, or 0.</summary>
    public ulong AbsmaxCodes;
    /// <summary>Group scales of the codes, or 0.</summary>
    public ulong AbsmaxScales;
    /// <summary>The signed dynamic map, or 0.</summary>
    public ulong Map256;
    /// <summary>Mean block scale (double quantization).</summary>
    public float Offset;
    /// <summary>log2 of the block size.</summary>
    public int BlockShift;
}

/// <summary>adamw.cu's <c>AdamTensor</c>: one entry of a multi-tensor AdamW launch (56 bytes, as the kernel's struct).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AdamTensorArgs
{
    /// <summary>Parameter.</summary>
    public ulong P;
    /// <summary>Gradient.</summary>
    public ulong G;
    /// <summary>First moment.</summary>
    public ulong M;
    /// <summary>Second moment.</summary>
    public ulong V;
    /// <summary>Element count.</summary>
    public long N;
    /// <summary>Index of the tensor's first chunk among all chunks.</summary>
    public long FirstChunk;
    /// <summary>1 − lr · weight decay.</summary>
    public float Decay;
    /// <summary>lr / (1 − β1ᵗ).</summary>
    public float StepSize;
}

/// <summary>One tensor of a multi-tensor AdamW step on the device.</summary>
/// <param name="P">Parameter address.</param>
/// <param name="G">Gradient address.</param>
/// <param name="M">First-moment address.</param>
/// <param name="V">Second-moment address.</param>
/// <param name="Count">Elements.</param>
/// <param name="Lr">Learning rate of the tensor's group.</param>
/// <param name="WeightDecay">Weight decay of the tensor's group.</param>
internal readonly record struct AdamWTensor(ulong P, ulong G, ulong M, ulong V, long Count, float Lr, float WeightDecay);

/// <summary>Host-side packing of kernel arguments (pure; tested on the CPU).</summary>
internal static class CudaArgs
{
    /// <summary>
    /// The <c>AdamTensor</c> array of a multi-tensor AdamW launch and its grid (total chunks): each tensor's first chunk,
    /// its decay 1 − lr·wd and step size lr / bc1, computed as the single-tensor kernel's host side does.
    /// </summary>
    public static (AdamTensorArgs[] Entries, long TotalChunks) AdamWMulti(IReadOnlyList<AdamWTensor> tensors, float biasCorrection1,
        int chunkSize = CudaLaunch.AdamWChunk)
    {
        var (first, total) = CudaLaunch.MultiTensorChunks(tensors.Select(t => t.Count).ToArray(), chunkSize);
        var entries = new AdamTensorArgs[tensors.Count];
        for (int i = 0; i < entries.Length; i++)
        {
            var t = tensors[i];
            entries[i] = new AdamTensorArgs
            {
                P = t.P, G = t.G, M = t.M, V = t.V, N = t.Count, FirstChunk = first[i],
                Decay = 1f - t.Lr * t.WeightDecay,
                StepSize = t.Lr / biasCorrection1,
            };
        }
        return (entries, total);
    }

    /// <summary>The byte offsets of the 8-bit state parts in AdamW8bit's layout: absmax m, absmax v, codes m, codes v.</summary>
    public static (long AbsmaxM, long AbsmaxV, long CodesM, long CodesV) AdamW8bitOffsets(long count, int blocks) =>
        (0, (long)blocks * sizeof(float), 2L * blocks * sizeof(float), 2L * blocks * sizeof(float) + count);

    /// <summary>The 4-bit weight's parts at the given device addresses, as the kernel reads them.</summary>
    public static Quant4BitArgs Quant4Bit(QuantizedWeight weight, ulong packed, ulong code16, ulong absmax, ulong absmaxCodes,
        ulong absmaxScales, ulong map256) => new()
        {
            Packed = packed,
            Code16 = code16,
            Absmax = weight.IsDoubleQuantized ? 0 : absmax,
            AbsmaxCodes = weight.IsDoubleQuantized ? absmaxCodes : 0,
            AbsmaxScales = weight.IsDoubleQuantized ? absmaxScales : 0,
            Map256 = weight.IsDoubleQuantized ? map256 : 0,
            Offset = weight.AbsmaxOffset,
            BlockShift = System.Numerics.BitOperations.Log2((uint)weight.BlockSize),
        };
}
