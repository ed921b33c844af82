using PeftGen.Autograd;
using PeftGen.Backends;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// alpha·a + beta·b. <paramref name="b"/> has a's shape, or a's trailing dimensions (a bias broadcast over rows).
    /// </summary>
    public static Tensor Add(Tensor a, Tensor b, float alpha = 1f, float beta = 1f)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        bool broadcast = !ShapeUtil.SameShape(a.Shape, b.Shape);
        if (broadcast && (b.Rank > a.Rank || !a.Shape[(a.Rank - b.Rank)..].SequenceEqual(b.Shape)))
            throw new ArgumentException($"Add: {b.DescribeForError()} neither matches nor broadcasts over {a.DescribeForError()}.", nameof(b));
        a = a.Contiguous();
        b = b.Contiguous();
        var y = Tensor.Empty(a.ShapeArray, a.Device);
        Backend.Of(a).AddScaled(a, alpha, b, beta, y);
        if (Tape.ShouldRecord(a, b))
            Tape.Record(y, () =>
            {
                var g = y.Grad!;
                bool shared = false;                                                         // g handed to a, not copied
                if (a.RequiresGrad && !(alpha == 1f && (shared = Grads.TryShare(a, g))))
                {
                    var ga = Grads.Buffer(a, out bool acc);
                    Backend.Of(g).Scale(g, alpha, ga, acc);
                }
                if (b.RequiresGrad && !(beta == 1f && !broadcast && !shared && Grads.TryShare(b, g)))
                {
                    var gb = Grads.Buffer(b, out bool acc);
                    if (broadcast)
                    {
                        using var summed = Tensor.Empty(b.ShapeArray, a.Device);
                        Backend.Of(g).SumRows(g, summed, accumulate: false);
                        Backend.Of(g).Scale(summed, beta, gb, acc);
                    }
                    else Backend.Of(g).Scale(g, beta, gb, acc);
                }
            });
        return y;
    }

    /// <summary>Elementwise product of two tensors of the same shape.</summary>
    public static Tensor Mul(Tensor a, Tensor b)
    {
        RequireSameShape(a, b, nameof(Mul));
        a = a.Contiguous();
        b = b.Contiguous();
        var y = Tensor.Empty(a.ShapeArray, a.Device);
        Backend.Of(a).Mul(a, b, y, accumulate: false);
        if (Tape.ShouldRecord(a, b))
            Tape.Record(y, () =>
            {
                var g = y.Grad!;
                if (a.RequiresGrad) Backend.Of(g).Mul(g, b, Grads.Buffer(a, out bool acc), acc);
                if (b.RequiresGrad) Backend.Of(g).Mul(g, a, Grads.Buffer(b, out bool acc), acc);
            });
        return y;
    }

    /// <summary>x ∘ v with v [c] broadcast over the rows of x [..., c] (per-channel scaling, as DoRA's magnitude).</summary>
    public static Tensor MulChannels(Tensor x, Tensor v)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(v);
        if (v.Rank != 1 || x.Size(-1) != v.Size(0))
            throw new ArgumentException($"MulChannels: {v.DescribeForError()} must be [{x.Size(-1)}] to scale the channels of {x.DescribeForError()}.");
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray, x.Device);
        Backend.Of(x).MulRows(x, v, y, accumulate: false);
        if (Tape.ShouldRecord(x, v))
            Tape.Record(y, () =>
            {
                var g = y.Grad!;
                if (x.RequiresGrad) Backend.Of(g).MulRows(g, v, Grads.Buffer(x, out bool acc), acc);
                if (v.RequiresGrad) Backend.Of(g).SumRowsOfProduct(g, x, Grads.Buffer(v, out bool acc), acc);
            });
        return y;
    }

    /// <summary>s · x.</summary>
    public static Tensor Scale(Tensor x, float s)
    {
        ArgumentNullException.ThrowIfNull(x);
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray, x.Device);
        Backend.Of(x).Scale(x, s, y, accumulate: false);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () => Backend.Of(x).Scale(y.Grad!, s, Grads.Buffer(x, out bool acc), acc));
        return y;
    }

    /// <summary>SiLU (swish): x · sigmoid(x).</summary>
    public static Tensor Silu(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray, x.Device);
        Backend.Of(x).SiluForward(x, y);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () => Backend.Of(x).SiluBackward(y.Grad!, x, Grads.Buffer(x, out bool acc), acc));
        return y;
    }

    /// <summary>The SwiGLU gate of a Llama MLP, fused: silu(gate) ∘ up.</summary>
    public static Tensor SwiGlu(Tensor gate, Tensor up)
    {
        RequireSameShape(gate, up, nameof(SwiGlu));
        gate = gate.Contiguous();
        up = up.Contiguous();
        var y = Tensor.Empty(gate.ShapeArray, gate.Device);
        Backend.Of(gate).SwiGluForward(gate, up, y);
        if (Tape.ShouldRecord(gate, up))
            Tape.Record(y, () =>
            {
                // The kernel writes both gradients at once: straight into fresh buffers, else via scratch.
                var g = y.Grad!;
                bool accGate = false, accUp = false;
                var dGate = gate.RequiresGrad ? Grads.Buffer(gate, out accGate) : null;
                var dUp = up.RequiresGrad ? Grads.Buffer(up, out accUp) : null;
                if (dGate != null && dUp != null && !accGate && !accUp)
                {
                    Backend.Of(g).SwiGluBackward(g, gate, up, dGate, dUp, accumulate: false);
                    return;
                }
                using var tGate = Tensor.Empty(gate.ShapeArray, gate.Device);
                using var tUp = Tensor.Empty(up.ShapeArray, gate.Device);
                Backend.Of(g).SwiGluBackward(g, gate, up, tGate, tUp, accumulate: false);
                if (dGate != null) Backend.Of(g).CopyStrided(tGate, dGate, accGate);
                if (dUp != null) Backend.Of(g).CopyStrided(tUp, dUp, accUp);
            });
        return y;
    }

    /// <summary>
    /// Inverted dropout: zeroes each element with probability <paramref name="p"/> and scales survivors by 1/(1-p).
    /// The mask comes from <paramref name="random"/>, so a seeded generator makes runs repeatable (and resumable:
    /// an <see cref="Rng"/>'s state goes into checkpoints).
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, Rng random)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(random);
        if (p < 0f || p >= 1f) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1)");
        if (p == 0f) return x;
        x = x.Contiguous();
        float keep = 1f / (1f - p);
        Tensor mask;
        if (x.Device.Type != DeviceType.Cpu && Backend.Of(x) is IRandomKernels device)
        {
            mask = Tensor.Empty(x.ShapeArray, x.Device);                                     // drawn on the device from one seed
            device.DropoutMask(mask, p, keep, random.NextUInt64());
        }
        else
        {
            mask = Tensor.Empty(x.ShapeArray);
            var m = mask.AsSpan();
            for (int i = 0; i < m.Length; i++) m[i] = random.NextSingle() < p ? 0f : keep;
            mask = mask.To(x.Device);                                                        // drawn on the host, used where x is
        }
        var y = Tensor.Empty(x.ShapeArray, x.Device);
        Backend.Of(x).Mul(x, mask, y, accumulate: false);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () => Backend.Of(x).Mul(y.Grad!, mask, Grads.Buffer(x, out bool acc), acc));
        return y;
    }

    /// <summary>Sum of all elements, as a one-element tensor.</summary>
    public static Tensor Sum(Tensor x) => Reduce(x, mean: false);

    /// <summary>Mean of all elements, as a one-element tensor.</summary>
    public static Tensor Mean(Tensor x) => Reduce(x, mean: true);

    private static Tensor Reduce(Tensor x, bool mean)
    {
        ArgumentNullException.ThrowIfNull(x);
        x = x.Contiguous();
        double total = Backend.Of(x).Sum(x);
        float factor = mean ? 1f / Math.Max(1, x.Count) : 1f;
        var y = Tensor.Empty([1], x.Device);
        Backend.Of(x).Fill(y, (float)(total * factor));
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () =>
            {
                var gx = Grads.Buffer(x, out bool acc);
                float g = y.Grad!.Item() * factor;
                if (acc)
                {
                    using var fill = Tensor.Empty(x.ShapeArray, x.Device);
                    Backend.Of(x).Fill(fill, g);
                    Backend.Of(x).CopyStrided(fill, gx, accumulate: true);
                }
                else Backend.Of(x).Fill(gx, g);
            });
        return y;
    }

    /// <summary>Softmax over the last dimension.</summary>
    public static Tensor Softmax(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray, x.Device);
        Backend.Of(x).SoftmaxForward(x, y);
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () => Backend.Of(x).SoftmaxBackward(y.Grad!, y, Grads.Buffer(x, out bool acc), acc));
        return y;
    }

    private static void RequireSameShape(Tensor a, Tensor b, string op)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (!ShapeUtil.SameShape(a.Shape, b.Shape))
            throw new ArgumentException($"{op}: {a.DescribeForError()} and {b.DescribeForError()} must have the same shape.");
    }
}
