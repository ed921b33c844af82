using PeftGen.IO;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>
/// A model with LoRA adapters (PEFT's <c>PeftModel</c> over a <c>LoraModel</c>): wraps targeted linear layers in
/// <see cref="LoRALinear"/> (quantizing their base to 4-bit for QLoRA), freezes everything else, and manages named
/// adapters: add, activate, disable, delete, weighted combination, merge and unload. The variants (rsLoRA, DoRA, LoRA-FA,
/// Delta-LoRA) are settings of <see cref="LoRAConfig"/>.
/// </summary>
public sealed class PeftModel<TModel> : AdaptedModel<TModel, LoRALinear, LoRAConfig> where TModel : Module
{
    private PeftModel(TModel model, QuantizationConfig? quantization, ulong seed) : base(model, quantization, seed)
    {
    }

    /// <summary>Adapted layers by path.</summary>
    public IEnumerable<(string Path, LoRALinear Layer)> LoRALayers => WrappedLayers;

    /// <summary>
    /// Adds LoRA to <paramref name="model"/> (QLoRA when <paramref name="quantization"/> is given: the targeted
    /// layers' base weights are stored 4-bit). The whole base model is frozen; only adapters train.
    /// </summary>
    /// <exception cref="ArgumentException">A target matches nothing (the message lists close names) or a setting is invalid.</exception>
    public static PeftModel<TModel> Create(TModel model, LoRAConfig config, QuantizationConfig? quantization = null, string adapterName = "default")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        var peft = new PeftModel<TModel>(model, quantization, (ulong)config.Seed);
        model.Freeze();
        peft.AddAdapter(adapterName, config);
        return peft;
    }

    /// <summary>Adds another adapter (inactive until <see cref="AdaptedModel{TModel, TLayer, TConfig}.SetAdapter"/>; the first adapter is active).</summary>
    /// <exception cref="ArgumentException">The name is taken, a target matches nothing, or a setting is invalid.</exception>
    public void AddAdapter(string name, LoRAConfig config)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (HasAdapter(name)) throw new ArgumentException($"An adapter named '{name}' already exists.", nameof(name));
        var paths = ResolveTargets(config.Targets, config.Exclude, config.Layers);
        var initRng = new Rng((ulong)config.Seed * 0x9E37_79B9 + (ulong)AdapterCount + 1);
        bool first = AdapterCount == 0;
        foreach (var path in paths)
        {
            LoRAVariants.CheckBase(config, Quantization, path, (Model.GetModule(path) as LoRALinear)?.BaseLayer ?? (LinearBase)Model.GetModule(path));
            var layer = Model.GetModule(path) as LoRALinear ?? Wrap(path, baseLayer => new LoRALinear(baseLayer, DropoutRng));
            int rank = PeftModel.RankWithin(config, path, layer.InFeatures, layer.OutFeatures);
            layer.AddAdapter(name, rank, config.AlphaFor(path), config, initRng);
            if (!first) layer.SetActiveAdapters(layer.ActiveAdapters.Where(a => a != name).ToArray());
        }
        SetConfig(name, config);
        ApplyBiasMode(config.Bias);
        if (first) SetAdapter(name);
    }

    /// <summary>
    /// Creates <paramref name="newName"/> as a weighted combination of existing adapters (PEFT's add_weighted_adapter).
    /// "cat" concatenates the factors (rank Σr_i) and is exact: ΔW = Σ w_i·ΔW_i. "linear" (equal ranks) sums
    /// √w_i·s_i·A_i and √w_i·B_i, which also mixes cross terms, exactly as PEFT does. The new adapter has scaling 1.
    /// </summary>
    public void AddWeightedAdapter(IReadOnlyList<string> adapters, IReadOnlyList<float> weights, string newName, string combination = "cat")
    {
        ArgumentNullException.ThrowIfNull(adapters);
        ArgumentNullException.ThrowIfNull(weights);
        if (adapters.Count == 0 || adapters.Count != weights.Count)
            throw new ArgumentException($"Give one weight per adapter ({adapters.Count} adapters, {weights.Count} weights).", nameof(weights));
        foreach (var a in adapters) GetConfig(a);
        if (HasAdapter(newName)) throw new ArgumentException($"An adapter named '{newName}' already exists.", nameof(newName));
        if (combination is not ("cat" or "linear"))
            throw new ArgumentException($"Unknown combination '{combination}': use \"cat\" or \"linear\".", nameof(combination));
        int newRank = 0;
        foreach (var (path, layer) in LoRALayers)
        {
            var present = adapters.Select((a, i) => (a, w: weights[i])).Where(p => layer.AdapterNames.Contains(p.a)).ToList();
            if (present.Count == 0) continue;
            var ranks = present.Select(p => layer.GetSettings(p.a).Rank).ToArray();
            if (combination == "linear" && ranks.Distinct().Count() > 1)
                throw new ArgumentException($"\"linear\" combination needs equal ranks; '{path}' has ranks {string.Join(", ", ranks)}. Use \"cat\".", nameof(combination));
            int rank = combination == "cat" ? ranks.Sum() : ranks[0];
            newRank = Math.Max(newRank, rank);
            var a = new float[rank * layer.InFeatures];
            var b = new float[layer.OutFeatures * rank];
            int offset = 0;
            foreach (var (name, w) in present)
            {
                var s = layer.GetSettings(name);
                var ai = layer.LoraA(name).ToArray();                                              // [r_i, in]
                var bi = layer.LoraB(name).ToArray();                                              // [out, r_i]
                float fa = combination == "cat" ? w * s.Scaling : MathF.Sqrt(w) * s.Scaling;
                float fb = combination == "cat" ? 1f : MathF.Sqrt(w);
                for (int r = 0; r < s.Rank; r++)
                    for (int c = 0; c < layer.InFeatures; c++)
                        a[(offset + r) * layer.InFeatures + c] += fa * ai[r * layer.InFeatures + c];
                for (int o = 0; o < layer.OutFeatures; o++)
                    for (int r = 0; r < s.Rank; r++)
                        b[o * rank + offset + r] += fb * bi[o * s.Rank + r];
                if (combination == "cat") offset += s.Rank;
            }
            using var ta = Tensor.FromArray(a, rank, layer.InFeatures);
            using var tb = Tensor.FromArray(b, layer.OutFeatures, rank);
            layer.AddAdapterFromFactors(newName, ta, tb, new AdapterSettings(rank, rank, 1f, 0f, false), null);
            layer.LoraA(newName).RequiresGrad = layer.LoraB(newName).RequiresGrad = false;
        }
        var baseConfig = GetConfig(adapters[0]);
        SetConfig(newName, baseConfig with { Rank = newRank, Alpha = newRank, UseRsLoRA = false, UseDoRA = false, Dropout = 0f });
    }

    /// <inheritdoc />
    private protected override void SetTrainable(LoRALinear layer, string adapter, bool active)
    {
        layer.LoraA(adapter).RequiresGrad = active && !layer.GetSettings(adapter).UseLoRAFA; // LoRA-FA keeps A frozen
        layer.LoraB(adapter).RequiresGrad = active;
        if (layer.Magnitude(adapter) is { } m) m.RequiresGrad = active;
        if (!active)
        {
            layer.LoraA(adapter).ZeroGrad();
            layer.LoraB(adapter).ZeroGrad();
        }
    }

    /// <inheritdoc />
    private protected override AdaptedLayer PlanRow(string path, LoRALinear layer, string adapter)
    {
        var s = layer.GetSettings(adapter);
        long count = (long)s.Rank * ((s.UseLoRAFA ? 0 : layer.InFeatures) + layer.OutFeatures) + (s.UseDoRA ? layer.OutFeatures : 0);
        return new AdaptedLayer(path, layer.InFeatures, layer.OutFeatures, s.Rank, s.Alpha, s.Scaling, layer.BaseLayer is Linear4Bit, count);
    }

    // ---- IAdaptedModel: Delta-LoRA's base update and the file formats ------------------------------------------------

    private readonly Dictionary<string, DeltaLoRAUpdater> _deltaUpdaters = new(StringComparer.Ordinal);

    /// <summary>
    /// The Delta-LoRA base update of each active adapter with <see cref="LoRAConfig.DeltaLoRA"/> settings, a new
    /// <see cref="DeltaLoRAUpdater"/> that snapshots A and B now; the model keeps it for <see cref="SaveAdapter"/> and disposes it.
    /// </summary>
    public override TrainingHooks PrepareTraining()
    {
        var hooks = new List<Optim.IAfterStepHook>();
        foreach (var adapter in ActiveAdapters)
        {
            if (GetConfig(adapter).DeltaLoRA == null) continue;
            if (_deltaUpdaters.Remove(adapter, out var previous)) previous.Dispose();
            var updater = DeltaLoRAUpdater.Create(this, adapter);
            _deltaUpdaters.Add(adapter, updater);
            hooks.Add(updater);
        }
        return hooks.Count == 0 ? TrainingHooks.None : new TrainingHooks([], hooks);
    }

    /// <summary>
    /// Writes the active adapter: a Hugging Face PEFT LoRA folder (<see cref="PeftAdapterFile"/>), or for Delta-LoRA the
    /// LoRA folder plus the base change of the updater the last trainer ran (<see cref="DeltaLoRAFile"/>).
    /// </summary>
    /// <param name="folder">The adapter folder, created when missing.</param>
    /// <param name="baseModelNameOrPath">The config's <c>base_model_name_or_path</c>, or null.</param>
    public override void SaveAdapter(string folder, string? baseModelNameOrPath = null)
    {
        string adapter = AdaptedModel.SingleActive(ActiveAdapters, "LoRA");
        if (GetConfig(adapter).DeltaLoRA == null) PeftAdapterFile.Save(this, folder, adapter, baseModelNameOrPath);
        else
        {
            if (!_deltaUpdaters.TryGetValue(adapter, out var updater)) _deltaUpdaters.Add(adapter, updater = DeltaLoRAUpdater.Create(this, adapter));
            DeltaLoRAFile.Save(this, updater, folder, baseModelNameOrPath);
        }
    }

    /// <summary>Disposes the model and the Delta-LoRA updaters training created.</summary>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        foreach (var updater in _deltaUpdaters.Values) updater.Dispose();
        _deltaUpdaters.Clear();
    }

    private void ApplyBiasMode(LoRABias mode)
    {
        if (mode == LoRABias.None) return;
        foreach (var (path, tensor) in Model.NamedParameters())
        {
            if (!path.EndsWith(".bias", StringComparison.Ordinal)) continue;
            if (mode == LoRABias.All || path.Contains(".base_layer.", StringComparison.Ordinal)) tensor.RequiresGrad = true;
        }
    }
}

/// <summary>Entry points that infer the model type.</summary>
public static class PeftModel
{
    /// <summary>Adds LoRA (or QLoRA with <paramref name="quantization"/>) to <paramref name="model"/>.</summary>
    public static PeftModel<TModel> Create<TModel>(TModel model, LoRAConfig config, QuantizationConfig? quantization = null, string adapterName = "default")
        where TModel : Module => PeftModel<TModel>.Create(model, config, quantization, adapterName);

    /// <summary>
    /// The options for loading a model that LoRA with <paramref name="lora"/> will adapt (QLoRA with
    /// <paramref name="quantization"/>): the layers the adapter targets stored 4-bit while they are read, every other
    /// weight frozen in the checkpoint's 16-bit type.
    /// </summary>
    /// <param name="lora">The adapter that will be added (its targets, exclusions and layer filter pick the 4-bit layers).</param>
    /// <param name="quantization">The 4-bit format; null for plain LoRA on a 16-bit base.</param>
    public static ModelLoadOptions LoadOptions(LoRAConfig lora, QuantizationConfig? quantization)
    {
        ArgumentNullException.ThrowIfNull(lora);
        return new ModelLoadOptions
        {
            Quantization = quantization,
            QuantizeLayer = path => Adapts(lora, path),
            FrozenWeights = FrozenWeightStorage.AsStored,
        };
    }

    /// <summary>
    /// Whether <paramref name="config"/> adapts the linear layer at <paramref name="path"/>: its targets select it and
    /// neither its exclusions nor its layer filter drop it (PEFT's rules; generated code checks layers with it).
    /// </summary>
    internal static bool Adapts(LoRAConfig config, string path)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(path);
        return TargetModules.Selects(config.Targets, config.Exclude, config.Layers, path);
    }

    /// <summary>The rank <paramref name="config"/> gives the layer at <paramref name="path"/>: its rank_pattern entry, else its rank.</summary>
    internal static int RankFor(LoRAConfig config, string path)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(path);
        return config.RankFor(path);
    }

    /// <summary>
    /// The paths among <paramref name="linears"/> (a model's linear layers, in module order) that <paramref name="config"/>
    /// adapts, with an error for a target that matches nothing (naming close layer names) or a selection left empty.
    /// </summary>
    internal static IReadOnlyList<string> ResolveTargets(LoRAConfig config, IReadOnlyList<string> linears) =>
        TargetModules.Resolve(config.Targets, config.Exclude, config.Layers, linears);

    /// <summary>The rank <paramref name="config"/> gives the layer at <paramref name="path"/>, checked against min(in, out) of that layer.</summary>
    internal static int RankWithin(LoRAConfig config, string path, int inFeatures, int outFeatures)
    {
        int rank = config.RankFor(path);
        int limit = Math.Min(inFeatures, outFeatures);
        if (rank > limit)
            throw new ArgumentException($"LoRA rank {rank} for '{path}' exceeds min(in, out) = {limit} of that layer.", nameof(config));
        return rank;
    }
}
