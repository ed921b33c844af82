using PeftGen.Autograd;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>
/// A linear layer with LoRA adapters: y = base(x) + Σ s·B·A·dropout(x) over the active adapters, where the base
/// (float or 4-bit) is frozen and only A [r, in], B [out, r] (and DoRA's magnitude [out]) train. The update is
/// applied as two skinny matmuls, so B·A is never formed while training. Children follow PEFT's in-memory
/// names: "base_layer", "lora_A.&lt;adapter&gt;", "lora_B.&lt;adapter&gt;", "lora_magnitude_vector.&lt;adapter&gt;".
/// </summary>
public sealed class LoRALinear : AdaptedLinear, ILoRAPlusLayer
{
    private readonly ModuleDict<Linear> _loraA;
    private readonly ModuleDict<Linear> _loraB;
    private readonly ModuleDict<DoRAMagnitude> _magnitude;
    private readonly Dictionary<string, AdapterSettings> _settings = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _mergedBase = new(StringComparer.Ordinal); // DoRA: W0 before merging
    private readonly Rng _dropoutRng;

    /// <summary>Wraps <paramref name="baseLayer"/>; dropout masks come from <paramref name="dropoutRng"/>.</summary>
    internal LoRALinear(LinearBase baseLayer, Rng dropoutRng) : base(baseLayer)
    {
        _dropoutRng = dropoutRng ?? throw new ArgumentNullException(nameof(dropoutRng));
        _loraA = RegisterModule("lora_A", new ModuleDict<Linear>());
        _loraB = RegisterModule("lora_B", new ModuleDict<Linear>());
        _magnitude = RegisterModule("lora_magnitude_vector", new ModuleDict<DoRAMagnitude>());
    }

    /// <inheritdoc />
    public override IEnumerable<string> AdapterNames => _settings.Keys;

    /// <summary>The rank, alpha-derived scaling and options of an adapter.</summary>
    public AdapterSettings GetSettings(string name) =>
        _settings.TryGetValue(name, out var s) ? s : throw new KeyNotFoundException($"This layer has no adapter '{name}' (have: {string.Join(", ", _settings.Keys)}).");

    /// <summary>A [r, in] of an adapter.</summary>
    public Tensor LoraA(string name) => _loraA[name].Weight;

    /// <summary>B [out, r] of an adapter.</summary>
    public Tensor LoraB(string name) => _loraB[name].Weight;

    /// <summary>LoRA+ trains every B matrix faster (<see cref="ILoRAPlusLayer"/>): the B of each adapter.</summary>
    public IEnumerable<Tensor> LoRAPlusParameters() => AdapterNames.Select(LoraB);

    /// <summary>DoRA's magnitude [out] of an adapter, or null for plain LoRA.</summary>
    public Tensor? Magnitude(string name) => _magnitude.Contains(name) ? _magnitude[name].Weight : null;

    /// <summary>Adds an adapter of rank <paramref name="rank"/> and makes it active alongside the others.</summary>
    internal void AddAdapter(string name, int rank, float alpha, LoRAConfig config, Rng initRng)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(initRng);
        if (_settings.ContainsKey(name)) throw new ArgumentException($"Adapter '{name}' already exists on this layer.", nameof(name));
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "rank must be ≥ 1");
        var a = new Linear(InFeatures, rank);                                                   // A [r, in]
        var b = new Linear(rank, OutFeatures);                                                  // B [out, r] = 0
        var aw = a.Weight.AsSpan();
        if (config.Init == LoRAInit.Gaussian)
            for (int i = 0; i < aw.Length; i++) aw[i] = (float)(Gaussian(initRng) / rank);
        else
        {
            float bound = 1f / MathF.Sqrt(InFeatures); // kaiming_uniform(a=√5): √(6 / ((1 + 5)·fan_in))
            for (int i = 0; i < aw.Length; i++) aw[i] = (2f * initRng.NextSingle() - 1f) * bound;
        }
        _loraA.Add(name, a);
        _loraB.Add(name, b);
        var settings = AdapterSettings.For(config, rank, alpha);
        if (config.UseLoRAFA) a.Weight.RequiresGrad = false;                                   // LoRA-FA: A stays frozen
        _settings.Add(name, settings);
        if (config.UseDoRA)
        {
            using var w = BaseLayer.EffectiveWeight();
            _magnitude.Add(name, new DoRAMagnitude(RowNorms(w)));                               // m = ‖W0‖ per row
        }
        Activate(name);
    }

    /// <summary>Creates an adapter directly from factors (weighted combinations, loading files).</summary>
    internal void AddAdapterFromFactors(string name, Tensor a, Tensor b, AdapterSettings settings, Tensor? magnitude)
    {
        if (_settings.ContainsKey(name)) throw new ArgumentException($"Adapter '{name}' already exists on this layer.", nameof(name));
        var la = new Linear(InFeatures, settings.Rank);
        var lb = new Linear(settings.Rank, OutFeatures);
        a.AsSpan().CopyTo(la.Weight.AsSpan());
        b.AsSpan().CopyTo(lb.Weight.AsSpan());
        _loraA.Add(name, la);
        _loraB.Add(name, lb);
        if (magnitude != null) _magnitude.Add(name, new DoRAMagnitude(magnitude.ToArray()));
        _settings.Add(name, settings);
    }

    /// <inheritdoc />
    private protected override void RequireAdapter(string name) => GetSettings(name);

    /// <summary>Removes an adapter (unmerge it first if merged).</summary>
    public override void DeleteAdapter(string name)
    {
        PrepareDelete(name);
        _loraA.Remove(name);
        _loraB.Remove(name);
        if (_magnitude.Contains(name)) _magnitude.Remove(name);
        _settings.Remove(name);
    }

    /// <inheritdoc />
    /// <remarks>Plain LoRA reads x for dA = (g·B)ᵀ·x; LoRA-FA keeps only x·Aᵀ, so with a frozen base nothing reads x.</remarks>
    internal override bool KeepsInputForBackward =>
        BaseLayer.KeepsInputForBackward
        || !AdaptersDisabled && ActiveAdapters.Any(name => !Merged.Contains(name) && !_settings[name].UseLoRAFA);

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        var baseOut = BaseLayer.Forward(input);                                                  // [..., out]
        var y = baseOut;
        if (AdaptersDisabled)
        {
            if (Merged.Count > 0) throw new InvalidOperationException("Adapters are merged into the base weight; unmerge before disabling them.");
            return y;
        }
        using var adapterGemms = Backends.WorkProfiler.Gemms(Backends.WorkKind.AdapterGemm);
        // Plain LoRA adds its update into the base output's storage (one op, no extra buffers); DoRA reads the base
        // output after its update is formed, so with any DoRA adapter active every update goes through its own buffer.
        bool addInPlace = ActiveAdapters.All(name => Merged.Contains(name) || !_settings[name].UseDoRA);
        foreach (var name in ActiveAdapters)
        {
            if (Merged.Contains(name)) continue;
            var s = _settings[name];
            var x = IsTraining && s.Dropout > 0 ? Ops.Dropout(input, s.Dropout, _dropoutRng) : input;
            if (addInPlace)
            {
                y = LowRankUpdate.AddInto(y, x, _loraA[name].Weight, _loraB[name].Weight, s.Scaling, LoRAFA.CorrectionFor(_loraA[name].Weight, _loraB[name].Weight, s)); // y + s·B·A·x
                continue;
            }
            var lora = s.UseLoRAFA                                                               // [..., out] = B·A·x
                ? LowRankUpdate.AddInto(Tensor.Create(baseOut.ShapeArray, DType.Float32, zeroed: true, device: x.Device), // keeps only x·Aᵀ
                    x, _loraA[name].Weight, _loraB[name].Weight, 1f, LoRAFA.CorrectionFor(_loraA[name].Weight, _loraB[name].Weight, s))
                : _loraB[name].Forward(_loraA[name].Forward(x));
            if (!s.UseDoRA)
            {
                y = Ops.Add(y, lora, 1f, s.Scaling);                                             // y + s·B·A·x
                continue;
            }
            // DoRA: m/‖W0 + sBA‖ ∘ (x·W0ᵀ + s·B·A·x), with the norm a constant in backward (as in the paper and PEFT).
            var product = Bias == null ? baseOut : Ops.Add(baseOut, Bias, 1f, -1f);               // x·W0ᵀ
            var inverseNorm = InverseAdaptedNorm(name);                                          // [out], step-scoped: backward reads it
            var scale = Ops.Mul(_magnitude[name].Weight, inverseNorm);                           // [out]
            var adapted = Ops.MulChannels(Ops.Add(product, lora, 1f, s.Scaling), scale);
            y = Ops.Add(y, Ops.Add(adapted, product, 1f, -1f));
        }
        return y;
    }

    /// <inheritdoc />
    public override Tensor EffectiveWeight()
    {
        var w = BaseLayer.EffectiveWeight();                                                     // [out, in]
        foreach (var name in ActiveAdapters)
            if (!Merged.Contains(name) && !AdaptersDisabled) ApplyUpdate(w, name);
        return w;
    }

    /// <summary>
    /// Folds the active adapters into a float32 or 16-bit base weight (W ← W + s·B·A; DoRA: W ← m/‖W + s·B·A‖ ∘ (W + s·B·A)).
    /// A bf16/fp16 base is widened, updated and rounded back, as PEFT merges into a bf16 base. A 4-bit base cannot absorb
    /// an update without re-quantizing it: use <see cref="AdaptedModel{TModel, TLayer, TConfig}.MergeAndUnload"/>, which merges into a new
    /// 16/32-bit copy instead.
    /// </summary>
    public override void Merge()
    {
        var linear = BaseLayer as Linear
            ?? throw new InvalidOperationException($"The base of this layer is {BaseLayer.GetType().Name}; merging in place needs a float or 16-bit Linear base. Use MergeAndUnload to merge into a 16-bit copy.");
        foreach (var name in ActiveAdapters.Where(n => !Merged.Contains(n)).ToArray())
        {
            var weight = linear.Weight;
            if (_settings[name].UseDoRA)                                                        // W0 in its own dtype: restored exactly
                _mergedBase[name] = Tensor.Create(weight.ShapeArray, weight.DType, false, scoped: false, weight.Device).CopyFrom(weight);
            linear.UpdateWeight(w => ApplyUpdate(w, name));
            Merged.Add(name);
        }
    }

    /// <summary>
    /// Undoes <see cref="Merge"/>, restoring the base weight (exactly for DoRA; for LoRA up to float rounding, or up to 16-bit
    /// rounding on a bf16/fp16 base).
    /// </summary>
    public override void Unmerge()
    {
        var linear = BaseLayer as Linear;
        for (int i = Merged.Count - 1; i >= 0 && linear != null; i--)
        {
            var name = Merged[i];
            if (_mergedBase.Remove(name, out var original))
            {
                linear.Weight.CopyFrom(original);
                original.Dispose();
            }
            else
            {
                using var delta = Delta(name);
                linear.UpdateWeight(w => Backends.Backend.Of(w).AddScaled(w, 1f, delta, -1f, w));
            }
        }
        Merged.Clear();
    }

    /// <summary>s·B·A [out, in] of an adapter, as a new tensor.</summary>
    public Tensor Delta(string name)
    {
        using var noGrad = GradMode.Disable();
        using var ba = Ops.MatMul(_loraB[name].Weight, _loraA[name].Weight);                    // [out, in]
        return Ops.Scale(ba, _settings[name].Scaling);
    }

    /// <summary>Adds adapter <paramref name="name"/>'s update to weight <paramref name="w"/> [out, in] in place.</summary>
    private void ApplyUpdate(Tensor w, string name)
    {
        using var noGrad = GradMode.Disable();
        using var delta = Delta(name);
        var be = Backends.Backend.Of(w);
        be.AddScaled(w, 1f, delta, 1f, w);
        if (!_settings[name].UseDoRA) return;
        // W' = m / ‖W0 + s·B·A‖ per output row.
        var norms = RowNorms(w);
        var m = _magnitude[name].Weight.AsSpan();
        var rows = w.AsSpan();
        int cols = w.Size(1);
        for (int r = 0; r < norms.Length; r++)
            System.Numerics.Tensors.TensorPrimitives.Multiply(rows.Slice(r * cols, cols), m[r] / norms[r], rows.Slice(r * cols, cols));
    }

    /// <summary>
    /// Test hook: reuse the first computed DoRA norm, so finite differences see the same constant the detached
    /// backward assumes.
    /// </summary>
    internal Dictionary<string, float[]>? FrozenDoRANorms { get; set; }

    /// <summary>1/‖W0 + s·B·A‖ per row, detached.</summary>
    private Tensor InverseAdaptedNorm(string name)
    {
        if (FrozenDoRANorms != null && FrozenDoRANorms.TryGetValue(name, out var frozen)) return Tensor.FromArray(frozen, frozen.Length);
        var inverse = ComputeInverseAdaptedNorm(name);
        FrozenDoRANorms?.Add(name, inverse.ToArray());
        return inverse;
    }

    private Tensor ComputeInverseAdaptedNorm(string name)
    {
        using var noGrad = GradMode.Disable();
        using var w = BaseLayer.EffectiveWeight();
        using var delta = Delta(name);
        Backends.Backend.Of(w).AddScaled(w, 1f, delta, 1f, w);
        var norms = RowNorms(w);
        for (int i = 0; i < norms.Length; i++) norms[i] = 1f / norms[i];
        return Tensor.FromArray(norms, norms.Length);
    }

    private static float[] RowNorms(Tensor w)
    {
        int rows = w.Size(0), cols = w.Size(1);
        var data = w.AsSpan();
        var norms = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = data.Slice(r * cols, cols);
            norms[r] = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.Dot(row, row));
        }
        return norms;
    }

    private static double Gaussian(Rng rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        foreach (var t in _mergedBase.Values) t.Dispose();
        _mergedBase.Clear();
    }
}

/// <summary>An adapter's fixed settings on one layer.</summary>
/// <param name="Rank">r.</param>
/// <param name="Alpha">alpha.</param>
/// <param name="Scaling">s = alpha/r (or alpha/√r with rsLoRA).</param>
/// <param name="Dropout">Dropout on the adapter input.</param>
/// <param name="UseDoRA">Whether a DoRA magnitude applies.</param>
public sealed record AdapterSettings(int Rank, float Alpha, float Scaling, float Dropout, bool UseDoRA)
{
    /// <summary>The settings <paramref name="config"/> gives a layer of rank <paramref name="rank"/> and alpha <paramref name="alpha"/>.</summary>
    internal static AdapterSettings For(LoRAConfig config, int rank, float alpha) =>
        new(rank, alpha, config.ScalingFor(rank, alpha), config.Dropout, config.UseDoRA)
        {
            UseLoRAFA = config.UseLoRAFA,
            LoRAFAGradientCorrection = config.LoRAFAGradientCorrection,
        };

    /// <summary>LoRA-FA: A is frozen and only B trains.</summary>
    public bool UseLoRAFA { get; init; }

    /// <summary>LoRA-FA's gradient correction of B is applied.</summary>
    public bool LoRAFAGradientCorrection { get; init; }
}

/// <summary>DoRA's trainable magnitude ("weight", [out]).</summary>
internal sealed class DoRAMagnitude : Module
{
    /// <summary>Creates the magnitude with initial values.</summary>
    public DoRAMagnitude(float[] initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        Weight = RegisterParameter("weight", Tensor.FromArray(initial, initial.Length));
    }

    /// <summary>m [out].</summary>
    public Tensor Weight { get; }
}
