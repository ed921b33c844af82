using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// y = x·Wᵀ (+ bias): x [..., in], weight [out, in] (PyTorch's layout), bias [out] → y [..., out].
    /// Backward gives dx = dy·W, dW += dyᵀ·x and dbias += Σ dy, each only when that input needs it.
    /// The weight may be a frozen bf16 or fp16 tensor (as stored in a checkpoint): it is then multiplied tile by tile
    /// without being widened as a whole, x and the bias stay float32, and it gets no gradient.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// The shapes do not fit, or the weight is 16-bit and x or the bias is not float32, or the 16-bit weight is a strided view.
    /// </exception>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 2 || x.Size(-1) != weight.Size(1))
            throw new ArgumentException($"Linear: input {x.DescribeForError()} does not fit weight {weight.DescribeForError()} (expected [..., {(weight.Rank == 2 ? weight.Size(1) : -1)}]).", nameof(x));
        if (bias != null && (bias.Rank != 1 || bias.Size(0) != weight.Size(0)))
            throw new ArgumentException($"Linear: bias {bias.DescribeForError()} does not fit weight {weight.DescribeForError()}.", nameof(bias));
        if (weight.DType != DType.Float32) return Linear16(x, weight, bias);
        x = x.Contiguous();
        weight = weight.Contiguous();
        int inF = weight.Size(1), outF = weight.Size(0);
        int rows = checked((int)(x.Count / inF));
        var shape = (int[])x.ShapeArray.Clone();
        shape[^1] = outF;
        var y = Tensor.Empty(shape, x.Device);                                               // [..., out]
        var be = Backend.Of(x);
        be.Gemm(false, true, rows, outF, inF, 1f, x, inF, 0, weight, inF, 0, 0f, y, outF, 0, 1);
        if (bias != null) be.AddScaled(y, 1f, bias, 1f, y);
        if (Tape.ShouldRecord(x, weight, bias))
            Tape.Record(y, () =>
            {
                var g = y.Grad!;                                                             // [rows, out]
                if (x.RequiresGrad)
                {
                    var gx = Grads.Buffer(x, out bool acc);                                  // [rows, in] = g·W
                    be.Gemm(false, false, rows, inF, outF, 1f, g, outF, 0, weight, inF, 0, acc ? 1f : 0f, gx, inF, 0, 1);
                }
                if (weight.RequiresGrad)
                {
                    var gw = Grads.Buffer(weight, out bool acc);                             // [out, in] = gᵀ·x
                    be.Gemm(true, false, outF, inF, rows, 1f, g, outF, 0, x, inF, 0, acc ? 1f : 0f, gw, inF, 0, 1);
                }
                if (bias?.RequiresGrad == true)
                    be.SumRows(g, Grads.Buffer(bias, out bool acc), acc);
            });
        return y;
    }

    /// <summary>y = x·Wᵀ (+ bias) with a frozen 16-bit weight W [out, in]: dx = dy·W through the backend's 16-bit kernels.</summary>
    private static Tensor Linear16(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.DType != DType.Float32)
            throw new ArgumentException($"Linear: input {x.DescribeForError()} is {x.DType}; a {weight.DType} weight {weight.DescribeForError()} multiplies float32 inputs (convert the input with To(DType.Float32)).", nameof(x));
        if (bias != null && bias.DType != DType.Float32)
            throw new ArgumentException($"Linear: bias {bias.DescribeForError()} is {bias.DType}; biases are float32 even beside a {weight.DType} weight (convert it with To(DType.Float32)).", nameof(bias));
        if (!weight.IsContiguous)
            throw new ArgumentException($"Linear: the {weight.DType} weight {weight.DescribeForError()} is a strided view; a 16-bit weight must be a dense [out, in] tensor.", nameof(weight));
        return FrozenLinear(x, weight.Size(0), bias,
            (be, input, y) => be.Linear16Forward(input, weight, y),
            (be, g, gx, accumulate) => be.Linear16BackwardInput(g, weight, gx, accumulate));
    }

    /// <summary>
    /// y [..., out] = x [..., in] · Wᵀ (+ bias) for a frozen weight that only the backend's kernels read (4-bit, 16-bit):
    /// <paramref name="forward"/>(backend, x, y) writes x·Wᵀ, <paramref name="backwardInput"/>(backend, dy, dx, accumulate)
    /// writes or adds dy·W. The weight never gets a gradient; the bias does when it requires one. Shapes are checked by the caller.
    /// </summary>
    private static Tensor FrozenLinear(Tensor x, int outFeatures, Tensor? bias,
        Action<IBackend, Tensor, Tensor> forward, Action<IBackend, Tensor, Tensor, bool> backwardInput)
    {
        x = x.Contiguous();
        var shape = (int[])x.ShapeArray.Clone();
        shape[^1] = outFeatures;
        var y = Tensor.Empty(shape, x.Device);                                               // [..., out]
        var be = Backend.Of(x);
        forward(be, x, y);
        if (bias != null) be.AddScaled(y, 1f, bias, 1f, y);
        if (bias == null ? Tape.ShouldRecord(x) : Tape.ShouldRecord(x, bias))
            Tape.Record(y, () =>
            {
                var g = y.Grad!;                                                             // [rows, out]
                if (x.RequiresGrad)
                {
                    var gx = Grads.Buffer(x, out bool acc);                                  // [rows, in] = g·W
                    backwardInput(be, g, gx, acc);
                }
                if (bias?.RequiresGrad == true)
                    be.SumRows(g, Grads.Buffer(bias, out bool acc), acc);
            });
        return y;
    }

    /// <summary>
    /// Matrix product over the last two dimensions: a [..., m, k] · b [..., k, n] → [..., m, n]. Leading
    /// (batch) dimensions must match, or b may be a plain [k, n] matrix shared by every batch entry.
    /// Transposed views are read in place (no copy).
    /// </summary>
    public static Tensor MatMul(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Rank < 2 || b.Rank < 2 || a.Size(-1) != b.Size(-2))
            throw new ArgumentException($"MatMul: {a.DescribeForError()} · {b.DescribeForError()}: inner dimensions differ or a rank is below 2.");
        bool shared = b.Rank == 2 && a.Rank > 2;
        if (!shared && !a.Shape[..^2].SequenceEqual(b.Shape[..^2]))
            throw new ArgumentException($"MatMul: batch dimensions of {a.DescribeForError()} and {b.DescribeForError()} differ.");
        var ma = MatrixOperand.Of(ref a);
        var mb = MatrixOperand.Of(ref b);
        int m = a.Size(-2), k = a.Size(-1), n = b.Size(-1);
        int batch = checked((int)(ShapeUtil.Count(a.Shape[..^2])));
        var shape = (int[])a.ShapeArray.Clone();
        shape[^1] = n;
        var y = Tensor.Empty(shape, a.Device);                                               // [..., m, n]
        var be = Backend.Of(a);
        be.Gemm(ma.Trans, mb.Trans, m, n, k, 1f, a, ma.Ld, ma.BatchStride, b, mb.Ld, shared ? 0 : mb.BatchStride,
            0f, y, n, (long)m * n, batch);
        if (Tape.ShouldRecord(a, b))
            Tape.Record(y, () =>
            {
                var g = y.Grad!;                                                             // [..., m, n]
                if (a.RequiresGrad)
                {
                    // dA [m, k] = g · Bᵀ
                    var ga = Grads.Buffer(a, out bool acc);
                    be.Gemm(false, !mb.Trans, m, k, n, 1f, g, n, (long)m * n, b, mb.Ld, shared ? 0 : mb.BatchStride,
                        acc ? 1f : 0f, ga, k, (long)m * k, batch);
                }
                if (b.RequiresGrad)
                {
                    var gb = Grads.Buffer(b, out bool acc);
                    if (shared)
                        // dB [k, n] = Σ_batch Aᵀ · g = (A as [batch·m, k])ᵀ · (g as [batch·m, n]) when A is dense.
                        GemmSharedB(be, a, ma, g, gb, m, n, k, batch, acc);
                    else
                        be.Gemm(!ma.Trans, false, k, n, m, 1f, a, ma.Ld, ma.BatchStride, g, n, (long)m * n,
                            acc ? 1f : 0f, gb, n, (long)k * n, batch);
                }
            });
        return y;
    }

    private static void GemmSharedB(IBackend be, Tensor a, MatrixOperand ma, Tensor g, Tensor gb, int m, int n, int k, int batch, bool acc)
    {
        if (!ma.Trans && ma.Ld == k && ma.BatchStride == (long)m * k)
        {
            be.Gemm(true, false, k, n, batch * m, 1f, a, k, 0, g, n, 0, acc ? 1f : 0f, gb, n, 0, 1);
            return;
        }
        for (int i = 0; i < batch; i++)
        {
            using var ai = a.View([m, k], ma.Trans ? [1, ma.Ld] : [ma.Ld, 1], a.Offset + i * ma.BatchStride);
            using var gi = g.View([m, n], [n, 1], g.Offset + (long)i * m * n);
            be.Gemm(!ma.Trans, false, k, n, m, 1f, ai, ma.Ld, 0, gi, n, 0, acc || i > 0 ? 1f : 0f, gb, n, 0, 1);
        }
    }

    /// <summary>How a GEMM reads the last two dimensions of a tensor: directly, or as a transposed view.</summary>
    private readonly record struct MatrixOperand(bool Trans, int Ld, long BatchStride)
    {
        /// <summary>Describes <paramref name="t"/>, replacing it by a dense copy when its layout is not GEMM-readable.</summary>
        public static MatrixOperand Of(ref Tensor t)
        {
            int r = t.Rank;
            long s0 = t.StridesArray[r - 2], s1 = t.StridesArray[r - 1];
            int rows = t.ShapeArray[r - 2], cols = t.ShapeArray[r - 1];
            long matrix = (long)rows * cols;
            if (UniformBatch(t, out long bs))
            {
                if (s1 == 1 && s0 >= cols) return new(false, (int)s0, bs);
                if (s0 == 1 && s1 >= rows) return new(true, (int)s1, bs);
            }
            t = Contiguous(t);
            return new(false, cols, matrix);
        }

        private static bool UniformBatch(Tensor t, out long batchStride)
        {
            // Batch dimensions must collapse to a single stride for a strided-batched GEMM.
            int r = t.Rank;
            batchStride = r > 2 ? t.StridesArray[r - 3] : 0;
            for (int d = r - 4; d >= 0; d--)
                if (t.ShapeArray[d] != 1 && t.StridesArray[d] != t.StridesArray[d + 1] * t.ShapeArray[d + 1]) return false;
            return true;
        }
    }
}
