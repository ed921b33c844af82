using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// Rows of <paramref name="weight"/> [vocab, c] for each id; the result has shape <paramref name="shape"/> + [c]. A frozen
    /// bf16 or fp16 table (as stored in a checkpoint) is read as it is: only the rows looked up are widened into the
    /// float32 result.
    /// </summary>
    public static Tensor Embedding(Tensor weight, ReadOnlySpan<int> ids, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 2) throw new ArgumentException($"Embedding: weight {weight.DescribeForError()} must be [vocab, dim].", nameof(weight));
        if (ShapeUtil.Count(shape) != ids.Length)
            throw new ArgumentException($"Embedding: {ids.Length} ids do not fill shape {ShapeUtil.Format(shape)}.", nameof(shape));
        int vocab = weight.Size(0);
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {ids[i]} at position {i} is outside the vocabulary of {weight.DescribeForError()} (size {vocab}).");
        if (weight.DType != DType.Float32 && !weight.IsContiguous)
            throw new ArgumentException($"Embedding: the {weight.DType} table {weight.DescribeForError()} is a strided view; a 16-bit table must be a dense [vocab, dim] tensor.", nameof(weight));
        weight = weight.Contiguous();
        var y = Tensor.Empty([.. shape, weight.Size(1)], weight.Device);                       // [..., c]
        Backend.Of(weight).EmbeddingForward(weight, ids, y);
        if (Tape.ShouldRecord(weight))
        {
            var saved = ids.ToArray();
            Tape.Record(y, () =>
            {
                var gw = Grads.Buffer(weight, out bool acc);
                if (!acc) Backend.Of(gw).Fill(gw, 0f);
                Backend.Of(gw).EmbeddingBackward(y.Grad!, saved, gw);
            });
        }
        return y;
    }

    /// <summary>RMSNorm over the last dimension: x · rsqrt(mean(x²) + eps) · weight.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, float eps)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 1 || x.Size(-1) != weight.Size(0))
            throw new ArgumentException($"RmsNorm: {x.DescribeForError()} does not fit weight {weight.DescribeForError()}.");
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray, x.Device);                                         // [..., c]
        var rstd = Tensor.Empty([checked((int)(x.Count / weight.Size(0)))], x.Device);       // [rows]
        Backend.Of(x).RmsNormForward(x, weight, y, rstd, eps);
        if (Tape.ShouldRecord(x, weight))
            Tape.Record(y, () =>
            {
                bool acc = false;
                var dx = x.RequiresGrad ? Grads.Buffer(x, out acc) : Tensor.Empty(x.ShapeArray, x.Device);
                Tensor? dw = null;
                if (weight.RequiresGrad)
                {
                    dw = Grads.Buffer(weight, out bool accW);
                    if (!accW) Backend.Of(dw).Fill(dw, 0f); // the kernel always accumulates dw
                }
                Backend.Of(x).RmsNormBackward(y.Grad!, x, weight, rstd, dx, dw, acc);
                if (!x.RequiresGrad) dx.Dispose();
            });
        return y;
    }

    /// <summary>
    /// Rotary position embedding of x [b, t, heads, headDim] for positions offset..offset+t-1.
    /// <paramref name="interleaved"/>: rotate pairs (2i, 2i+1) as Meta and llama2.c do; otherwise Hugging Face's rotate-half.
    /// </summary>
    public static Tensor Rope(Tensor x, int positionOffset, float theta, bool interleaved)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Rank != 4 || x.Size(3) % 2 != 0)
            throw new ArgumentException($"Rope: {x.DescribeForError()} must be [batch, time, heads, headDim] with an even headDim.", nameof(x));
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray, x.Device);
        Backend.Of(x).Rope(x, y, positionOffset, theta, interleaved, inverse: false);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () =>
            {
                // A rotation's transpose is the opposite rotation.
                var gx = Grads.Buffer(x, out bool acc);
                if (!acc)
                {
                    Backend.Of(x).Rope(y.Grad!, gx, positionOffset, theta, interleaved, inverse: true);
                    return;
                }
                using var back = Tensor.Empty(x.ShapeArray, x.Device);
                Backend.Of(x).Rope(y.Grad!, back, positionOffset, theta, interleaved, inverse: true);
                Backend.Of(x).CopyStrided(back, gx, accumulate: true);
            });
        return y;
    }

    /// <summary>
    /// Causal grouped-query attention: q [b, t, heads, d], k and v [b, t, kvHeads, d] → [b, t, heads, d],
    /// scaled by 1/sqrt(d). Memory-efficient: no [t, t] score matrix is stored; backward recomputes it.
    /// </summary>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        CheckAttentionShapes(q, k, v, k.Size(1));
        if (q.Size(1) != k.Size(1))
            throw new ArgumentException($"CausalAttention: {q.DescribeForError()} and keys {k.DescribeForError()} differ in length; use AttentionWithCache for decoding.");
        return TrainableAttention(q, k, v);
    }

    /// <summary>Differentiable causal attention of q, the last tq of tk positions, over k and v [b, tk, kvHeads, d].</summary>
    private static Tensor TrainableAttention(Tensor q, Tensor k, Tensor v)
    {
        q = q.Contiguous();
        k = k.Contiguous();
        v = v.Contiguous();
        float scale = 1f / MathF.Sqrt(q.Size(3));
        var y = Tensor.Empty(q.ShapeArray, q.Device);                                         // [b, t, hq, d]
        bool record = GradMode.IsEnabled && (q.RequiresGrad || k.RequiresGrad || v.RequiresGrad);
        var lse = record ? Tensor.Empty([q.Size(0), q.Size(2), q.Size(1)], q.Device) : null; // [b, hq, t]
        Backend.Of(q).AttentionForward(q, k, v, k.Size(1), y, lse, scale);
        if (record)
            Tape.Record(y, () =>
            {
                // The kernel overwrites all three gradients; accumulate through scratch where a buffer exists.
                bool accQ = false, accK = false, accV = false;
                var dq = q.RequiresGrad ? Grads.Buffer(q, out accQ) : null;
                var dk = k.RequiresGrad ? Grads.Buffer(k, out accK) : null;
                var dv = v.RequiresGrad ? Grads.Buffer(v, out accV) : null;
                using var tq = dq == null || accQ ? Tensor.Empty(q.ShapeArray, q.Device) : null;
                using var tk = dk == null || accK ? Tensor.Empty(k.ShapeArray, q.Device) : null;
                using var tv = dv == null || accV ? Tensor.Empty(v.ShapeArray, q.Device) : null;
                Backend.Of(q).AttentionBackward(y.Grad!, q, k, v, y, lse!, tq ?? dq!, tk ?? dk!, tv ?? dv!, scale);
                if (dq != null && tq != null) Backend.Of(q).CopyStrided(tq, dq, accumulate: true);
                if (dk != null && tk != null) Backend.Of(q).CopyStrided(tk, dk, accumulate: true);
                if (dv != null && tv != null) Backend.Of(q).CopyStrided(tv, dv, accumulate: true);
            });
        return y;
    }

    /// <summary>
    /// Causal grouped-query attention behind a key/value prefix: q [b, t, heads, d] holds the last t of the
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

    /// <summary>
    /// Attention for decoding with a KV cache (no gradients): q [b, tq, heads, d] holds the newest tq positions;
    /// the caches are [b, capacity, kvHeads, d] with the first <paramref name="keyLength"/> rows filled.
    /// </summary>
    public static Tensor AttentionWithCache(Tensor q, Tensor keyCache, Tensor valueCache, int keyLength)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(keyCache);
        ArgumentNullException.ThrowIfNull(valueCache);
        CheckAttentionShapes(q, keyCache, valueCache, keyLength);
        if (keyLength < q.Size(1) || keyLength > keyCache.Size(1))
            throw new ArgumentOutOfRangeException(nameof(keyLength), $"keyLength {keyLength} must be in [{q.Size(1)}, {keyCache.Size(1)}].");
        q = q.Contiguous();
        var y = Tensor.Empty(q.ShapeArray, q.Device);
        Backend.Of(q).AttentionForward(q, keyCache, valueCache, keyLength, y, null, 1f / MathF.Sqrt(q.Size(3)));
        return y;
    }

    private static void CheckAttentionShapes(Tensor q, Tensor k, Tensor v, int keyLength)
    {
        if (q.Rank != 4 || k.Rank != 4 || !ShapeUtil.SameShape(k.Shape, v.Shape) || q.Size(0) != k.Size(0) || q.Size(3) != k.Size(3)
            || k.Size(2) == 0 || q.Size(2) % k.Size(2) != 0 || keyLength > k.Size(1))
            throw new ArgumentException($"Attention: q {q.DescribeForError()}, k {k.DescribeForError()}, v {v.DescribeForError()} must be [b, t, heads, d] and [b, t, kvHeads, d] with heads a multiple of kvHeads.");
        if (!k.IsContiguous || !v.IsContiguous)
            throw new ArgumentException("Attention: keys and values must be contiguous.");
    }

    /// <summary>
    /// Mean cross-entropy of logits [n, vocab] against <paramref name="targets"/> [n], skipping positions whose
    /// target is <paramref name="ignoreIndex"/> (PyTorch's default -100). Fused: the softmax is never stored.
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex = -100)
    {
        ArgumentNullException.ThrowIfNull(logits);
        if (logits.Rank != 2 || logits.Size(0) != targets.Length)
            throw new ArgumentException($"CrossEntropy: logits {logits.DescribeForError()} must be [n, vocab] with n = {targets.Length} targets.", nameof(logits));
        logits = logits.Contiguous();
        int n = logits.Size(0);
        var losses = Tensor.Empty([n], logits.Device);
        var lse = Tensor.Empty([n], logits.Device);
        var be = Backend.Of(logits);
        be.CrossEntropyForward(logits, targets, ignoreIndex, losses, lse);
        float inverseCount = InverseCountedTargets(targets, ignoreIndex);
        var y = MeanOf(be, losses, inverseCount);
        if (Tape.ShouldRecord(logits))
        {
            var saved = targets.ToArray();
            Tape.Record(y, () =>
            {
                float scale = y.Grad!.Item() * inverseCount;
                var gl = Grads.Buffer(logits, out bool acc);
                if (!acc)
                {
                    be.CrossEntropyBackward(logits, lse, saved, ignoreIndex, scale, gl);
                    return;
                }
                using var tmp = Tensor.Empty(logits.ShapeArray, logits.Device);
                be.CrossEntropyBackward(logits, lse, saved, ignoreIndex, scale, tmp);
                be.CopyStrided(tmp, gl, accumulate: true);
            });
        }
        return y;
    }

    /// <summary>1 / the number of targets that are not <paramref name="ignoreIndex"/> (0 when every one is): a mean loss's scale.</summary>
    private static float InverseCountedTargets(ReadOnlySpan<int> targets, int ignoreIndex)
    {
        int counted = 0;
        foreach (int t in targets) if (t != ignoreIndex) counted++;
        return counted == 0 ? 0f : 1f / counted;
    }

    /// <summary>The one-element mean Σ losses · inverseCount, on the losses' device; the per-row losses are disposed.</summary>
    private static Tensor MeanOf(IBackend be, Tensor losses, float inverseCount)
    {
        var y = Tensor.Empty([1], losses.Device);
        be.Fill(y, (float)(be.Sum(losses) * inverseCount));
        losses.Dispose();
        return y;
    }
}
