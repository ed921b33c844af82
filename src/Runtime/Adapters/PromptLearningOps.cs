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
        q = q.Contiguous();
        k = k.Contiguous();
        v = v.Contiguous();
        if (q.Rank != 4 || k.Rank != 4 || !ShapeUtil.SameShape(k.Shape, v.Shape) || q.Size(0) != k.Size(0) || q.Size(3) != k.Size(3)
            || q.Size(2) % k.Size(2) != 0 || q.Size(1) > k.Size(1))
            throw new ArgumentException($"CausalAttentionWithPrefix: q {q.DescribeForError()}, k {k.DescribeForError()}, v {v.DescribeForError()} must be [b, t, heads, d] and [b, n + t, kvHeads, d] with heads a multiple of kvHeads.");
        float scale = 1f / MathF.Sqrt(q.Size(3));
        var y = Tensor.Empty(q.ShapeArray);                                                   // [b, t, hq, d]
        bool record = GradMode.IsEnabled && (q.RequiresGrad || k.RequiresGrad || v.RequiresGrad);
        var lse = record ? Tensor.Empty([q.Size(0), q.Size(2), q.Size(1)]) : null;          // [b, hq, t]
        Backend.Of(q).AttentionForward(q, k, v, k.Size(1), y, lse, scale);
        if (record)
            Tape.Record(y, () =>
            {
                // The kernel overwrites all three gradients; accumulate through scratch where a buffer exists.
                bool accQ = false, accK = false, accV = false;
                var dq = q.RequiresGrad ? Grads.Buffer(q, out accQ) : null;
                var dk = k.RequiresGrad ? Grads.Buffer(k, out accK) : null;
                var dv = v.RequiresGrad ? Grads.Buffer(v, out accV) : null;
                using var tq = dq == null || accQ ? Tensor.Empty(q.ShapeArray) : null;
                using var tk = dk == null || accK ? Tensor.Empty(k.ShapeArray) : null;
                using var tv = dv == null || accV ? Tensor.Empty(v.ShapeArray) : null;
                Backend.Of(q).AttentionBackward(y.Grad!, q, k, v, y, lse!, tq ?? dq!, tk ?? dk!, tv ?? dv!, scale);
                if (dq != null && tq != null) Backend.Of(q).CopyStrided(tq, dq, accumulate: true);
                if (dk != null && tk != null) Backend.Of(q).CopyStrided(tk, dk, accumulate: true);
                if (dv != null && tv != null) Backend.Of(q).CopyStrided(tv, dv, accumulate: true);
            });
        return y;
    }
}
