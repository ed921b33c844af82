using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

/// <summary>
/// The differentiable tensor operations. Every op records its backward on the autograd tape when an input
/// requires gradients, and runs on the input's device through its backend. Models use only these.
/// </summary>
public static partial class Ops
{
    /// <summary>Same data in a new shape; a view when <paramref name="x"/> is contiguous. One dimension may be -1.</summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(x);
        var resolved = ResolveShape(shape, x.Count, x);
        var source = x.IsContiguous ? x : Contiguous(x);
        var y = source.View(resolved, ShapeUtil.ContiguousStrides(resolved), source.Offset);
        if (Tape.ShouldRecord(source))
            Tape.Record(y, () =>
            {
                using var g = y.Grad!.View(source.ShapeArray, ShapeUtil.ContiguousStrides(source.ShapeArray), y.Grad!.Offset);
                AccumulateGrad(source, g);
            });
        return y;
    }

    /// <summary>Swaps two dimensions (a view).</summary>
    public static Tensor Transpose(Tensor x, int dim0, int dim1)
    {
        ArgumentNullException.ThrowIfNull(x);
        var dims = Enumerable.Range(0, x.Rank).ToArray();
        int a = ShapeUtil.NormalizeDim(dim0, x.Rank), b = ShapeUtil.NormalizeDim(dim1, x.Rank);
        (dims[a], dims[b]) = (dims[b], dims[a]);
        return Permute(x, dims);
    }

    /// <summary>Reorders dimensions: output dimension i is input dimension <paramref name="dims"/>[i] (a view).</summary>
    public static Tensor Permute(Tensor x, params int[] dims)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (dims.Length != x.Rank || dims.Select(d => ShapeUtil.NormalizeDim(d, x.Rank)).Distinct().Count() != x.Rank)
            throw new ArgumentException($"Permute({string.Join(", ", dims)}) is not a permutation of the {x.Rank} dimensions of {x.DescribeForError()}.", nameof(dims));
        var shape = new int[x.Rank];
        var strides = new long[x.Rank];
        var inverse = new int[x.Rank];
        for (int i = 0; i < dims.Length; i++)
        {
            int d = ShapeUtil.NormalizeDim(dims[i], x.Rank);
            shape[i] = x.ShapeArray[d];
            strides[i] = x.StridesArray[d];
            inverse[d] = i;
        }
        var y = x.View(shape, strides, x.Offset);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () =>
            {
                // The gradient of a permuted view is the output gradient permuted back.
                var g = y.Grad!;
                var back = new int[x.Rank];
                var backStrides = new long[x.Rank];
                for (int d = 0; d < x.Rank; d++)
                {
                    back[d] = g.ShapeArray[inverse[d]];
                    backStrides[d] = g.StridesArray[inverse[d]];
                }
                using var gView = g.View(back, backStrides, g.Offset);
                AccumulateGrad(x, gView);
            });
        return y;
    }

    /// <summary>Elements [start, start + length) along <paramref name="dim"/> (a view).</summary>
    public static Tensor Slice(Tensor x, int dim, int start, int length)
    {
        ArgumentNullException.ThrowIfNull(x);
        int d = ShapeUtil.NormalizeDim(dim, x.Rank);
        if (start < 0 || length < 0 || start + length > x.ShapeArray[d])
            throw new ArgumentOutOfRangeException(nameof(start), $"Slice [{start}, {start + length}) is outside dimension {d} (size {x.ShapeArray[d]}) of {x.DescribeForError()}.");
        var shape = (int[])x.ShapeArray.Clone();
        shape[d] = length;
        var y = x.View(shape, (long[])x.StridesArray.Clone(), x.Offset + start * x.StridesArray[d]);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () =>
            {
                var gx = Grads.Buffer(x, out bool accumulate);
                if (!accumulate) Backend.Of(gx).Fill(gx, 0f);
                using var region = gx.View(shape, (long[])gx.StridesArray.Clone(), gx.Offset + start * gx.StridesArray[d]);
                Backend.Of(gx).CopyStrided(y.Grad!, region, accumulate: true);
            });
        return y;
    }

    /// <summary>A dense row-major copy of <paramref name="x"/> (always a new tensor).</summary>
    public static Tensor Contiguous(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        var y = Tensor.Empty(x.ShapeArray, x.DType, x.Device);
        Backend.Of(x).CopyStrided(x, y, accumulate: false);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () => AccumulateGrad(x, y.Grad!));
        return y;
    }

    /// <summary>Joins tensors along <paramref name="dim"/>; all other dimensions must agree.</summary>
    public static Tensor Concat(IReadOnlyList<Tensor> tensors, int dim)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Count == 0) throw new ArgumentException("Concat needs at least one tensor.", nameof(tensors));
        var first = tensors[0];
        int d = ShapeUtil.NormalizeDim(dim, first.Rank);
        var shape = (int[])first.ShapeArray.Clone();
        shape[d] = 0;
        foreach (var t in tensors)
        {
            for (int i = 0; i < first.Rank; i++)
                if (i != d && (t.Rank != first.Rank || t.ShapeArray[i] != first.ShapeArray[i]))
                    throw new ArgumentException($"Concat along dimension {d}: {t.DescribeForError()} does not match {first.DescribeForError()}.", nameof(tensors));
            shape[d] += t.ShapeArray[d];
        }
        var y = Tensor.Empty(shape, first.Device);
        var offsets = new int[tensors.Count];
        int at = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            offsets[i] = at;
            using var region = SliceView(y, d, at, tensors[i].ShapeArray[d]);
            Backend.Of(y).CopyStrided(tensors[i], region, accumulate: false);
            at += tensors[i].ShapeArray[d];
        }
        if (tensors.Any(t => t.RequiresGrad) && GradMode.IsEnabled)
        {
            var inputs = tensors.ToArray();
            Tape.Record(y, () =>
            {
                for (int i = 0; i < inputs.Length; i++)
                {
                    if (!inputs[i].RequiresGrad) continue;
                    using var region = SliceView(y.Grad!, d, offsets[i], inputs[i].ShapeArray[d]);
                    AccumulateGrad(inputs[i], region);
                }
            });
        }
        return y;
    }

    private static Tensor SliceView(Tensor t, int d, int start, int length)
    {
        var shape = (int[])t.ShapeArray.Clone();
        shape[d] = length;
        return t.View(shape, (long[])t.StridesArray.Clone(), t.Offset + start * t.StridesArray[d]);
    }

    /// <summary>Adds <paramref name="gradient"/> (any layout, x's shape) into x's gradient buffer.</summary>
    internal static void AccumulateGrad(Tensor x, Tensor gradient)
    {
        if (!x.RequiresGrad) return;
        var gx = Grads.Buffer(x, out bool accumulate);
        Backend.Of(gx).CopyStrided(gradient, gx, accumulate);
    }

    private static int[] ResolveShape(int[] shape, long count, Tensor x)
    {
        var resolved = (int[])shape.Clone();
        int inferred = Array.IndexOf(resolved, -1);
        long known = 1;
        for (int i = 0; i < resolved.Length; i++)
            if (i != inferred) known *= resolved[i];
        if (inferred >= 0 && known > 0 && count % known == 0) resolved[inferred] = (int)(count / known);
        if (ShapeUtil.Count(resolved) != count || resolved.Any(s => s < 0))
            throw new ArgumentException($"Cannot reshape {x.DescribeForError()} ({count} elements) to {ShapeUtil.Format(shape)}.", nameof(shape));
        return resolved;
    }
}
