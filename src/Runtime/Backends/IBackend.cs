using PeftGen.Backends.Cpu;
using PeftGen.Tensors;

namespace PeftGen.Backends;

/// <summary>
/// The kernels a device provides. <see cref="Ops"/> (the differentiable API that models use) calls only
/// these, so a new device is added by implementing this interface (PeftGen.Cuda's <c>CudaBackend</c>, registered through
/// <see cref="DeviceBackends"/>); model code never changes. Unless stated, tensors are contiguous float32 on the backend's
/// device, "accumulate" means add into the destination, and destinations are otherwise overwritten.
/// </summary>
internal interface IBackend
{
    /// <summary>dst (+)= src elementwise; both may be strided views of the same shape.</summary>
    void CopyStrided(Tensor src, Tensor dst, bool accumulate);

    void Fill(Tensor dst, float value);

    /// <summary>y = alpha·a + beta·b, where b's elements repeat over a (b.Count divides a.Count: bias broadcast).</summary>
    void AddScaled(Tensor a, float alpha, Tensor b, float beta, Tensor y);

    /// <summary>y (+)= a ∘ b.</summary>
    void Mul(Tensor a, Tensor b, Tensor y, bool accumulate);

    /// <summary>y (+)= a ∘ v with v [c] repeated over the rows of a [rows, c] (per-channel scaling).</summary>
    void MulRows(Tensor a, Tensor v, Tensor y, bool accumulate);

    /// <summary>dst[c] (+)= Σ_rows g[rows, c] ∘ a[rows, c] (the gradient of a per-channel scale).</summary>
    void SumRowsOfProduct(Tensor g, Tensor a, Tensor dst, bool accumulate);

    /// <summary>y (+)= s · x.</summary>
    void Scale(Tensor x, float s, Tensor y, bool accumulate);

    /// <summary>dst[c] (+)= Σ_rows src[rows, c] with c = dst.Count (gradient of a broadcast add).</summary>
    void SumRows(Tensor src, Tensor dst, bool accumulate);

    /// <summary>Σ x, accumulated in double.</summary>
    double Sum(Tensor x);

    /// <summary>Batched row-major GEMM on tensor storage: C = alpha·op(A)·op(B) + beta·C, operands starting at each tensor's offset.</summary>
    void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        Tensor a, int lda, long strideA, Tensor b, int ldb, long strideB,
        float beta, Tensor c, int ldc, long strideC, int batch);

    /// <summary>y [n, c] = rows ids of weight [vocab, c]; the weight may be float32, bf16 or fp16 (its rows are widened).</summary>
    void EmbeddingForward(Tensor weight, ReadOnlySpan<int> ids, Tensor y);
    void EmbeddingBackward(Tensor dy, ReadOnlySpan<int> ids, Tensor dweight);

    void RmsNormForward(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps);
    void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dweight, bool accumulateDx);

    void SiluForward(Tensor x, Tensor y);
    void SiluBackward(Tensor dy, Tensor x, Tensor dx, bool accumulate);
    void SwiGluForward(Tensor gate, Tensor up, Tensor y);
    void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dgate, Tensor dup, bool accumulate);

    /// <summary>Rotary embedding of x [b, t, h, d] into y (may be x); inverse rotates back (the backward).</summary>
    void Rope(Tensor x, Tensor y, int positionOffset, float theta, bool interleaved, bool inverse);

    /// <summary>Causal GQA attention; k, v are [b, capacity, hkv, d] with the first keyLength rows valid.</summary>
    void AttentionForward(Tensor q, Tensor k, Tensor v, int keyLength, Tensor output, Tensor? lse, float scale);
    void AttentionBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse,
        Tensor dq, Tensor dk, Tensor dv, float scale);

    void SoftmaxForward(Tensor x, Tensor y);
    void SoftmaxBackward(Tensor dy, Tensor y, Tensor dx, bool accumulate);

    /// <summary>Σ x², accumulated in double (for gradient norms).</summary>
    double SumSquares(Tensor x);

    /// <summary>
    /// One AdamW update of <paramref name="param"/> in place from <paramref name="grad"/>, with moment buffers m and v.
    /// biasCorrection1/2 are 1 − β1ᵗ and 1 − β2ᵗ.
    /// </summary>
    void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
        float weightDecay, float biasCorrection1, float biasCorrection2);

    void CrossEntropyForward(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, Tensor lse);
    void CrossEntropyBackward(Tensor logits, Tensor lse, ReadOnlySpan<int> targets, int ignoreIndex, float gradScale, Tensor dlogits);

    /// <summary>
    /// The losses of <see cref="CrossEntropyForward"/>, with the logits overwritten by their gradient gradScale · (softmax −
    /// onehot) (zero rows for ignored targets): what a fused head and loss needs. By default the two kernels in turn, the
    /// backward in place; a backend may fuse them.
    /// </summary>
    void CrossEntropyWithGradient(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, float gradScale)
    {
        using var lse = Tensor.Create([logits.Size(0)], DType.Float32, zeroed: false, scoped: false, device: logits.Device); // [n]
        CrossEntropyForward(logits, targets, ignoreIndex, losses, lse);
        CrossEntropyBackward(logits, lse, targets, ignoreIndex, gradScale, logits);
    }

    /// <summary>
    /// The output head and loss of <see cref="Ops.LinearCrossEntropy"/> for a frozen head weight W [vocab, hidden] (float32,
    /// or bf16 / fp16): losses [n] of the logits x [n, hidden] · Wᵀ against the targets (0 for ignored ones) and, when
    /// <paramref name="inputGradient"/> [n, hidden] is given, gradScale · (softmax − onehot) · W written into it. By default
    /// the [n, vocab] logits are materialised and the kernels above run in turn; a backend may fuse them so the logits are
    /// never stored (the CPU backend does).
    /// </summary>
    void LinearCrossEntropy(Tensor x, Tensor weight, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, Tensor? inputGradient, float gradScale)
        => MaterialisedLinearCrossEntropy(this, x, weight, targets, ignoreIndex, losses, inputGradient, gradScale);

    /// <summary><see cref="LinearCrossEntropy"/>'s default on <paramref name="backend"/>'s kernels, through the [n, vocab] logits.</summary>
    internal static void MaterialisedLinearCrossEntropy(IBackend backend, Tensor x, Tensor weight, ReadOnlySpan<int> targets, int ignoreIndex,
        Tensor losses, Tensor? inputGradient, float gradScale)
    {
        int n = x.Size(0), hidden = x.Size(1), vocab = weight.Size(0);
        bool narrow = weight.DType != DType.Float32;
        using var logits = Tensor.Create([n, vocab], DType.Float32, zeroed: false, scoped: false, device: x.Device); // [n, vocab]
        if (narrow) backend.Linear16Forward(x, weight, logits);
        else backend.Gemm(false, true, n, vocab, hidden, 1f, x, hidden, 0, weight, hidden, 0, 0f, logits, vocab, 0, 1);
        if (inputGradient == null)
        {
            using var lse = Tensor.Create([n], DType.Float32, zeroed: false, scoped: false, device: x.Device); // [n]
            backend.CrossEntropyForward(logits, targets, ignoreIndex, losses, lse);
            return;
        }
        backend.CrossEntropyWithGradient(logits, targets, ignoreIndex, losses, gradScale);                 // logits := their gradient
        if (narrow) backend.Linear16BackwardInput(logits, weight, inputGradient, accumulate: false);
        else backend.Gemm(false, false, n, hidden, vocab, 1f, logits, vocab, 0, weight, hidden, 0, 0f, inputGradient, hidden, 0, 1);
    }

    /// <summary>y [rows, out] = x [rows, in] · dequant(W)ᵀ for a frozen 4-bit weight W [out, in], never materialising W in float.</summary>
    void Linear4BitForward(Tensor x, Quantization.QuantizedWeight weight, Tensor y);

    /// <summary>dx [rows, in] (+)= dy [rows, out] · dequant(W) for a frozen 4-bit weight W [out, in].</summary>
    void Linear4BitBackwardInput(Tensor dy, Quantization.QuantizedWeight weight, Tensor dx, bool accumulate);

    /// <summary>
    /// y [rows, out] = x [rows, in] · Wᵀ for a frozen 16-bit weight W [out, in] (contiguous bf16 or fp16, as stored in the
    /// checkpoint), never widening W as a whole.
    /// </summary>
    void Linear16Forward(Tensor x, Tensor weight16, Tensor y);

    /// <summary>dx [rows, in] (+)= dy [rows, out] · W for a frozen 16-bit weight W [out, in] (contiguous bf16 or fp16).</summary>
    void Linear16BackwardInput(Tensor dy, Tensor weight16, Tensor dx, bool accumulate);

    /// <summary>dst = src in dst's element type (float32 ⇄ bf16 / fp16, round to nearest even): dense tensors of the same element count.</summary>
    void ConvertDType(Tensor src, Tensor dst);
}

/// <summary>Finds the backend of a tensor's device: the CPU's, or the one registered for its device type (<see cref="DeviceBackends"/>).</summary>
internal static class Backend
{
    /// <exception cref="DeviceNotAvailableException">No backend is registered for the tensor's device type.</exception>
    public static IBackend Of(Tensor t) =>
        t.Device.Type == DeviceType.Cpu ? CpuBackend.Instance : DeviceBackends.Provider(t.Device).Backend(t.Device);
}
