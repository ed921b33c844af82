using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.IA3;

/// <summary>
/// A linear layer with (IA)³ adapters: learned per-channel vectors l that rescale the layer. For a feed-forward layer
/// (the FFN's down_proj) they scale the input, y = base(x ∘ l) with l [in]; for any other layer (k_proj, v_proj) the
/// output, y = base(x) ∘ l with l [out] (the bias included, as in PEFT). Several active adapters multiply. The base is
/// frozen; only the vectors train. Children follow PEFT's in-memory names: "base_layer" and "ia3_l.&lt;adapter&gt;"
/// (PEFT keeps the vector as a bare parameter [out, 1] or [1, in]; here it is the "weight" [channels] of a module).
/// </summary>
public sealed class IA3Linear : AdaptedLinear
{
    private readonly ModuleDict<IA3Vector> _vectors;
    private Tensor? _unmergedWeight; // the base weight and bias before the first merge, restored exactly by Unmerge
    private Tensor? _unmergedBias;

    /// <summary>Wraps <paramref name="baseLayer"/>; <paramref name="feedForward"/> scales its input instead of its output.</summary>
    internal IA3Linear(LinearBase baseLayer, bool feedForward) : base(baseLayer)
    {
        IsFeedForward = feedForward;
        _vectors = RegisterModule("ia3_l", new ModuleDict<IA3Vector>());
    }

    /// <summary>True when the vectors scale the input (a feed-forward layer), false when they scale the output.</summary>
    public bool IsFeedForward { get; }

    /// <summary>Channels one vector scales: in for a feed-forward layer, out otherwise.</summary>
    public int Channels => IsFeedForward ? InFeatures : OutFeatures;

    /// <inheritdoc />
    public override IEnumerable<string> AdapterNames => _vectors.Names;

    /// <summary>The vector l [channels] of an adapter.</summary>
    public Tensor Vector(string name) => _vectors[name].Weight;

    /// <summary>
    /// Adds an adapter whose vector starts at 1 (a no-op), or at N(0, 1) draws from <paramref name="random"/> when
    /// <paramref name="initOnes"/> is false, and makes it active alongside the others.
    /// </summary>
    internal void AddAdapter(string name, bool initOnes = true, Random? random = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_vectors.Contains(name)) throw new ArgumentException($"Adapter '{name}' already exists on this layer.", nameof(name));
        if (!initOnes && random == null) throw new ArgumentNullException(nameof(random), "Random initialisation needs a generator.");
        var values = new float[Channels];                                                     // l [channels]
        if (initOnes) values.AsSpan().Fill(1f);
        else using (var draw = Tensor.RandN([Channels], random!)) draw.AsSpan().CopyTo(values);
        _vectors.Add(name, new IA3Vector(values));
        Activate(name);
    }

    /// <inheritdoc />
    private protected override void RequireAdapter(string name) => _ = _vectors[name];

    /// <summary>Removes an adapter (unmerge it first if merged).</summary>
    public override void DeleteAdapter(string name)
    {
        PrepareDelete(name);
        _vectors.Remove(name);
    }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        if (AdaptersDisabled)
        {
            if (Merged.Count > 0) throw new InvalidOperationException("Adapters are merged into the base weight; unmerge before disabling them.");
            return BaseLayer.Forward(input);                                                  // [..., out]
        }
        var scales = ActiveAdapters.Where(n => !Merged.Contains(n)).Select(n => _vectors[n].Weight).ToList();
        if (IsFeedForward)
        {
            var x = input;                                                                    // [..., in]
            foreach (var l in scales) x = Ops.MulChannels(x, l);                              // x ∘ l
            return BaseLayer.Forward(x);                                                      // [..., out]
        }
        var y = BaseLayer.Forward(input);                                                     // [..., out]
        foreach (var l in scales) y = Ops.MulChannels(y, l);                                  // (x·Wᵀ + b) ∘ l
        return y;
    }

    /// <inheritdoc />
    public override Tensor EffectiveWeight()
    {
        var w = BaseLayer.EffectiveWeight();                                                  // [out, in]
        if (!AdaptersDisabled)
            foreach (var name in ActiveAdapters.Where(n => !Merged.Contains(n))) ScaleWeight(w, Vector(name));
        return w;
    }

    /// <summary>The bias [out] the layer effectively adds (scaled with the output for a non-feed-forward layer), or null.</summary>
    public Tensor? EffectiveBias()
    {
        if (Bias == null) return null;
        var b = Tensor.FromArray(Bias.ToArray(), OutFeatures);
        if (!AdaptersDisabled && !IsFeedForward)
            foreach (var name in ActiveAdapters.Where(n => !Merged.Contains(n)))
                TensorPrimitives.Multiply(b.AsSpan(), Vector(name).AsSpan(), b.AsSpan());
        return b;
    }

    /// <summary>
    /// Folds the active adapters into a float32 or 16-bit base: W ← W ∘ l per column (feed-forward) or per row, the bias with
    /// the rows (a bf16/fp16 weight is widened, scaled and rounded back). <see cref="Unmerge"/> restores the saved original
    /// exactly (PEFT divides by l + 1e-8 instead).
    /// </summary>
    public override void Merge()
    {
        var linear = BaseLayer as Linear
            ?? throw new InvalidOperationException($"The base of this layer is {BaseLayer.GetType().Name}; merging in place needs a float or 16-bit Linear base. Use MergeAndUnload to merge into a new float layer.");
        var pending = ActiveAdapters.Where(n => !Merged.Contains(n)).ToArray();
        if (pending.Length == 0) return;
        if (Merged.Count == 0)
        {
            // The originals in their own dtype, so Unmerge restores them bit for bit.
            var weight = linear.Weight;
            _unmergedWeight = Tensor.Create(weight.ShapeArray, weight.DType, false, scoped: false, weight.Device).CopyFrom(weight);
            if (linear.Bias != null) _unmergedBias = Tensor.Create(linear.Bias.ShapeArray, DType.Float32, false, scoped: false).CopyFrom(linear.Bias);
        }
        foreach (var name in pending)
        {
            linear.UpdateWeight(w => ScaleWeight(w, Vector(name)));
            if (linear.Bias != null && !IsFeedForward)
                TensorPrimitives.Multiply(linear.Bias.AsSpan(), Vector(name).AsSpan(), linear.Bias.AsSpan());
            Merged.Add(name);
        }
    }

    /// <summary>Undoes <see cref="Merge"/>, restoring the base weight and bias exactly.</summary>
    public override void Unmerge()
    {
        if (Merged.Count == 0 || BaseLayer is not Linear linear) return;
        linear.Weight.CopyFrom(_unmergedWeight!);
        if (_unmergedBias != null) linear.Bias!.CopyFrom(_unmergedBias);
        ReleaseUnmerged();
        Merged.Clear();
    }

    /// <summary>w [out, in] ∘ l: columns for a feed-forward layer (l [in]), rows otherwise (l [out]).</summary>
    private void ScaleWeight(Tensor w, Tensor l)
    {
        var rows = w.AsSpan();
        var scale = l.AsSpan();
        int cols = InFeatures;
        for (int r = 0; r < OutFeatures; r++)
        {
            var row = rows.Slice(r * cols, cols);
            if (IsFeedForward) TensorPrimitives.Multiply(row, scale, row);
            else TensorPrimitives.Multiply(row, scale[r], row);
        }
    }

    private void ReleaseUnmerged()
    {
        _unmergedWeight?.Dispose();
        _unmergedBias?.Dispose();
        _unmergedWeight = _unmergedBias = null;
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing) => ReleaseUnmerged();
}

/// <summary>An (IA)³ vector ("weight", [channels]).</summary>
internal sealed class IA3Vector : Module
{
    /// <summary>Creates the vector with initial values.</summary>
    public IA3Vector(float[] initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        Weight = RegisterParameter("weight", Tensor.FromArray(initial, initial.Length));
    }

    /// <summary>l [channels].</summary>
    public Tensor Weight { get; }
}
