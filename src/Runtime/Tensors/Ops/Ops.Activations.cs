using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// tanh(x), elementwise (the activation of small MLPs such as prompt encoders). Backward: dx = dy · (1 − y²).
    /// The values are computed on the host, like <see cref="Dropout"/>'s mask: the layers that use it are tiny.
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
    /// max(x, 0), elementwise (the activation of small MLPs such as prompt encoders and bottleneck adapters). Backward: dx = dy where x &gt; 0, else 0.
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
}
