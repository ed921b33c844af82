using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// Mean cross-entropy of the logits x·Wᵀ against <paramref name="targets"/>: the output head and the loss as one op,
    /// x [n, hidden], weight [vocab, hidden] (float32, or a frozen bf16/fp16 weight), targets [n]; positions whose target
    /// is <paramref name="ignoreIndex"/> are skipped. Equal to <c>CrossEntropy(Linear(x, weight), targets)</c>, but cheaper:
    /// when gradients are recorded, the gradient with respect to the logits, (softmax − onehot) / count, is written over the
    /// logits in the forward pass, so the [n, vocab] matrix exists once instead of twice (logits, then their gradient) and
    /// the backward goes straight to the two GEMMs (dx = upstream · G·W, dW += upstream · Gᵀ·x).
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

        var logits = Tensor.Empty([n, vocab], x.Device);                                     // [n, vocab]
        if (narrow) be.Linear16Forward(x, weight, logits);
        else be.Gemm(false, true, n, vocab, hidden, 1f, x, hidden, 0, weight, hidden, 0, 0f, logits, vocab, 0, 1);
        float inverseCount = InverseCountedTargets(targets, ignoreIndex);
        bool record = Tape.ShouldRecord(x, weight);
        var losses = Tensor.Empty([n], x.Device);                                            // [n]
        if (record)                                                                          // logits := d(mean loss)/d logits
            be.CrossEntropyWithGradient(logits, targets, ignoreIndex, losses, inverseCount);
        else
        {
            using var lse = Tensor.Empty([n], x.Device);                                     // [n]
            be.CrossEntropyForward(logits, targets, ignoreIndex, losses, lse);
        }
        var y = MeanOf(be, losses, inverseCount);
        if (!record)
        {
            logits.Dispose();
            return y;
        }

        var gradient = logits;                                                              // [n, vocab] (softmax − onehot) / count
        Tape.Record(y, () =>
        {
            float upstream = y.Grad!.Item();
            if (narrow && upstream != 1f) be.Scale(gradient, upstream, gradient, accumulate: false); // the 16-bit kernels take no alpha
            float alpha = narrow ? 1f : upstream;
            if (x.RequiresGrad)
            {
                var gx = Grads.Buffer(x, out bool acc);                                     // [n, hidden] = G·W
                if (narrow) be.Linear16BackwardInput(gradient, weight, gx, acc);
                else be.Gemm(false, false, n, hidden, vocab, alpha, gradient, vocab, 0, weight, hidden, 0, acc ? 1f : 0f, gx, hidden, 0, 1);
            }
            if (weight.RequiresGrad)
            {
                var gw = Grads.Buffer(weight, out bool acc);                                // [vocab, hidden] = Gᵀ·x
                be.Gemm(true, false, vocab, hidden, n, alpha, gradient, vocab, 0, x, hidden, 0, acc ? 1f : 0f, gw, hidden, 0, 1);
            }
            gradient.Dispose();                                                             // the step's largest buffer: free it now
        });
        return y;
    }
}
