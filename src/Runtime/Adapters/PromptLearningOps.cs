using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// tanh(x), elementwise (prefix tuning's reparameterisation MLP). Backward: dx = dy · (1 − y²).
    /// The values are computed on the host, like <see cref="Dropout"/>'s mask: the encoders that use it are tiny.
    /// </summary>
    public static Tensor Tanh(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray);                                                  // [...]
        TensorPrimitives.Tanh(x.AsSpan(), y.AsSpan());
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () =>
            {
                using var slope = Tensor.Empty(x.ShapeArray);                                // 1 − y²
                var s = slope.AsSpan();
                TensorPrimitives.Multiply(y.AsSpan(), y.AsSpan(), s);
                TensorPrimitives.Subtract(1f, s, s);
                Backend.Of(x).Mul(y.Grad!, slope, Grads.Buffer(x, out bool acc), acc);
            });
        return y;
    }

    /// <summary>
    /// max(x, 0), elementwise (P-tuning's prompt encoder MLP). Backward: dx = dy where x &gt; 0, else 0.
    /// Computed on the host, like <see cref="Dropout"/>'s mask.
    /// </summary>
    public static Tensor Relu(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray);                                                  // [...]
        TensorPrimitives.Max(x.AsSpan(), 0f, y.AsSpan());
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () =>
            {
                using var mask = Tensor.Empty(x.ShapeArray);                                 // 1 where x > 0
                var m = mask.AsSpan();
                var input = x.AsSpan();
                for (int i = 0; i < m.Length; i++) m[i] = input[i] > 0f ? 1f : 0f;
                Backend.Of(x).Mul(y.Grad!, mask, Grads.Buffer(x, out bool acc), acc);
            });
        return y;
    }

    /// <summary>
    /// Causal grouped-query attention behind a prefix (prefix tuning): q [b, t, heads, d] holds the last t of the
    /// n + t positions whose keys and values k, v [b, n + t, kvHeads, d] are given, so query i sees keys 0..n + i
    /// (the whole prefix and the causal past). Scaled by 1/sqrt(d); differentiable in q, k and v, memory-efficient
    /// like <see cref="CausalAttention"/> (the same kernel, whose queries are always the last tq of tk keys).
    /// </summary>
    /// <exception cref="ArgumentException">Shapes do not fit, or there are fewer keys than queries.</exception>
    public static Tensor CausalAttentionWithPrefix(Tensor q, Tensor k, Tensor v)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        k = k.Contiguous();
        v = v.Contiguous();
        CheckAttentionShapes(q, k, v, k.Size(1));
        if (q.Size(1) > k.Size(1))
            throw new ArgumentException($"CausalAttentionWithPrefix: q {q.DescribeForError()} has more positions than keys {k.DescribeForError()}; the keys must be the n prefix positions plus the t queries.");
        return TrainableAttention(q, k, v);
    }
}
