using PeftGen.Autograd;
using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>
/// The LoRA update added onto the base layer's output as one op: y + s·(x·Aᵀ)·Bᵀ, with the second GEMM accumulating
/// straight into y's storage. Against B(A(x)) followed by an add it saves, per layer and step, two [rows, out] buffers
/// (the update and the sum) and three passes over them (the add, and in backward the copy and scale of the gradient).
/// </summary>
internal static class LowRankUpdate
{
    /// <summary>
    /// y + scale·(x·Aᵀ)·Bᵀ for x [..., in], A [r, in], B [out, r] and y [..., out]. The result takes over y's storage:
    /// y must be a fresh output that nothing else reads afterwards (the base layer's output). Backward keeps h = x·Aᵀ
    /// [rows, r]: dB += s·gᵀ·h (then ·C with LoRA-FA's <paramref name="correction"/> C [r, r]), dA += (s·g·B)ᵀ·x,
    /// dx += (s·g·B)·A, and y's gradient is g itself. x's values are read only for dA: with a frozen A (LoRA-FA) the
    /// closure holds x only as the place to deposit dx, so its values may be released.
    /// </summary>
    public static Tensor AddInto(Tensor y, Tensor x, Tensor a, Tensor b, float scale, float[]? correction = null)
    {
        x = x.Contiguous();
        a = a.Contiguous();
        b = b.Contiguous();
        int inF = a.Size(1), r = a.Size(0), outF = b.Size(0);
        int rows = checked((int)(x.Count / inF));
        if (x.Size(-1) != inF || b.Size(1) != r || !y.IsContiguous || y.DType != DType.Float32 || y.Count != (long)rows * outF)
            throw new ArgumentException($"LoRA update: output {y.DescribeForError()}, input {x.DescribeForError()}, A {a.DescribeForError()} and B {b.DescribeForError()} do not fit.");
        var be = Backend.Of(x);
        var h = Tensor.Empty([rows, r], x.Device);                                           // [rows, r] = x·Aᵀ
        be.Gemm(false, true, rows, r, inF, 1f, x, inF, 0, a, inF, 0, 0f, h, r, 0, 1);
        var sum = y.View(y.ShapeArray, ShapeUtil.ContiguousStrides(y.ShapeArray), y.Offset); // [..., out], y's storage
        be.Gemm(false, true, rows, outF, r, scale, h, r, 0, b, r, 0, 1f, sum, outF, 0, 1);   // += s·h·Bᵀ
        if (!Tape.ShouldRecord(y, x, a) && !Tape.ShouldRecord(b)) return sum;
        Tape.Record(sum, () =>
        {
            var g = sum.Grad!;                                                               // [rows, out]
            if (y.RequiresGrad && !Grads.TryShare(y, g))
                be.CopyStrided(g, Grads.Buffer(y, out bool accY), accY);
            if (b.RequiresGrad)
            {
                var gb = Grads.Buffer(b, out bool acc);                                      // [out, r] = s·gᵀ·h (·C)
                if (correction == null)
                    be.Gemm(true, false, outF, r, rows, scale, g, outF, 0, h, r, 0, acc ? 1f : 0f, gb, r, 0, 1);
                else
                {
                    using var raw = Tensor.Empty([outF, r], x.Device);                       // [out, r] = s·gᵀ·h
                    using var c = Tensor.FromArray(correction, r, r).To(x.Device);           // [r, r]
                    be.Gemm(true, false, outF, r, rows, scale, g, outF, 0, h, r, 0, 0f, raw, r, 0, 1);
                    be.Gemm(false, false, outF, r, r, 1f, raw, r, 0, c, r, 0, acc ? 1f : 0f, gb, r, 0, 1);
                }
            }
            if (!a.RequiresGrad && !x.RequiresGrad) return;
            using var dh = Tensor.Empty([rows, r], x.Device);                                // [rows, r] = s·g·B
            be.Gemm(false, false, rows, r, outF, scale, g, outF, 0, b, r, 0, 0f, dh, r, 0, 1);
            if (a.RequiresGrad)
            {
                var ga = Grads.Buffer(a, out bool acc);                                      // [r, in] = dhᵀ·x
                be.Gemm(true, false, r, inF, rows, 1f, dh, r, 0, x, inF, 0, acc ? 1f : 0f, ga, inF, 0, 1);
            }
            if (x.RequiresGrad)
            {
                var gx = Grads.Buffer(x, out bool acc);                                      // [rows, in] = dh·A
                be.Gemm(false, false, rows, inF, r, 1f, dh, r, 0, a, inF, 0, acc ? 1f : 0f, gx, inF, 0, 1);
            }
        });
        return sum;
    }
}
