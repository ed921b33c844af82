using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// Mean cross-entropy of the logits x·Wᵀ against <paramref name="targets"/>: the output head and the loss as one op,
    /// x [n, hidden], weight [vocab, hidden] (float32, or a frozen bf16/fp16 weight), targets [n]; positions whose target
    /// is <paramref name="ignoreIndex"/> are skipped. Equal to <c>CrossEntropy(Linear(x, weight), targets)</c>, but the
    /// [n, vocab] logits — the largest activation of a language model's step — are not kept: with a frozen head (LoRA,
    /// QLoRA, every adapter method) the backend computes the loss and the input gradient in the forward pass
    /// (<see cref="Backends.IBackend.LinearCrossEntropy"/>; on the CPU the logits are never stored at all), and the backward
    /// only scales that [n, hidden] gradient. A trainable head needs the logits' gradient for its own, so it is written over
    /// the logits in the forward pass and the backward runs the two GEMMs (dx = upstream · G·W, dW += upstream · Gᵀ·x).
    /// </summary>
    /// <exception cref="ArgumentException">The shapes do not fit, or the weight is 16-bit and x is not float32.</exception>
    public static Tensor LinearCrossEntropy(Tensor x, Tensor weight, ReadOnlySpan<int> targets, int ignoreIndex = -100)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(weight);
        if (x.Rank != 2 || weight.Rank != 2 || x.Size(1) != weight.Size(1) || x.Size(0) != targets.Length)
            throw new ArgumentException($"LinearCrossEntropy: x {x.DescribeForError()} must be [n, hidden] with n = {targets.Length} targets, and weight {weight.DescribeForError()} [vocab, hidden].", nameof(x));
        bool narrow = weight.DType != DType.Float32;
        if (narrow && (x.DType != DType.Float32 || !weight.IsContiguous))
            throw new ArgumentException($"LinearCrossEntropy: a {weight.DType} weight {weight.DescribeForError()} must be dense and multiply a float32 x (got {x.DescribeForError()}, {x.DType}).", nameof(weight));
        x = x.Contiguous();
        if (!narrow) weight = weight.Contiguous();
        int n = x.Size(0), hidden = x.Size(1), vocab = weight.Size(0);
        var be = Backend.Of(x);

        float inverseCount = InverseCountedTargets(targets, ignoreIndex);
        bool record = Tape.ShouldRecord(x, weight);
        var losses = Tensor.Empty([n], x.Device);                                            // [n]
        if (!record || !weight.RequiresGrad)
            return FrozenHead(be, x, weight, targets, ignoreIndex, losses, inverseCount, record);

        // A trainable head (always float32: 16-bit tensors cannot require gradients) needs the logits' gradient G for its own.
        var logits = Tensor.Empty([n, vocab], x.Device);                                     // [n, vocab]
        be.Gemm(false, true, n, vocab, hidden, 1f, x, hidden, 0, weight, hidden, 0, 0f, logits, vocab, 0, 1);
        be.CrossEntropyWithGradient(logits, targets, ignoreIndex, losses, inverseCount);    // logits := d(mean loss)/d logits
        var y = MeanOf(be, losses, inverseCount);

        var gradient = logits;                                                              // [n, vocab] (softmax − onehot) / count
        Tape.Record(y, () =>
        {
            float upstream = y.Grad!.Item();
            if (x.RequiresGrad)
            {
                var gx = Grads.Buffer(x, out bool acc);                                     // [n, hidden] = G·W
                be.Gemm(false, false, n, hidden, vocab, upstream, gradient, vocab, 0, weight, hidden, 0, acc ? 1f : 0f, gx, hidden, 0, 1);
            }
            var gw = Grads.Buffer(weight, out bool accW);                                   // [vocab, hidden] = Gᵀ·x
            be.Gemm(true, false, vocab, hidden, n, upstream, gradient, vocab, 0, x, hidden, 0, accW ? 1f : 0f, gw, hidden, 0, 1);
            gradient.Dispose();                                                             // the step's largest buffer: free it now
        });
        return y;
    }

    /// <summary>
    /// The frozen-head route: the backend's fused head and loss gives the losses and, when x is recorded, the input
    /// gradient for an upstream gradient of 1, which the backward scales and hands to x.
    /// </summary>
    private static Tensor FrozenHead(IBackend be, Tensor x, Tensor weight, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses,
        float inverseCount, bool record)
    {
        var inputGradient = record ? Tensor.Empty([x.Size(0), x.Size(1)], x.Device) : null;  // [n, hidden] d(mean loss)/dx
        be.LinearCrossEntropy(x, weight, targets, ignoreIndex, losses, inputGradient, inverseCount);
        var y = MeanOf(be, losses, inverseCount);
        if (inputGradient is null) return y;
        Tape.Record(y, () =>
        {
            float upstream = y.Grad!.Item();
            if (upstream != 1f) be.Scale(inputGradient, upstream, inputGradient, accumulate: false);
            if (Grads.TryShare(x, inputGradient)) return;
            var gx = Grads.Buffer(x, out bool acc);                                         // [n, hidden]
            be.Scale(inputGradient, 1f, gx, acc);
            inputGradient.Dispose();
        });
        return y;
    }
}
