using System.Globalization;
using System.Text;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Adapters;

/// <summary>One adapted layer of an adapter, as planned: where, shapes, rank, scaling, trainable parameters.</summary>
/// <param name="Path">Module path, e.g. model.layers.0.self_attn.q_proj.</param>
/// <param name="InFeatures">Input size.</param>
/// <param name="OutFeatures">Output size.</param>
/// <param name="Rank">LoRA rank.</param>
/// <param name="Alpha">LoRA alpha.</param>
/// <param name="Scaling">Applied scaling.</param>
/// <param name="Quantized">The base is stored 4-bit.</param>
/// <param name="TrainableParameters">r·(in + out), plus out for DoRA.</param>
public sealed record AdaptedLayer(string Path, int InFeatures, int OutFeatures, int Rank, float Alpha, float Scaling, bool Quantized, long TrainableParameters);

/// <summary>
/// A model with LoRA adapters (PEFT's <c>PeftModel</c>): wraps targeted linear layers (quantizing their base to
/// 4-bit for QLoRA), freezes everything else, and manages named adapters: add, activate, disable, delete,
/// weighted combination, merge and unload.
/// </summary>
public sealed partial class PeftModel<TModel> : IAdaptedModel where TModel : Module
{
    private readonly Dictionary<string, LoRAConfig> _configs = new(StringComparer.Ordinal);
    private readonly QuantizationConfig? _quantization;

    private PeftModel(TModel model, QuantizationConfig? quantization, ulong seed)
    {
        Model = model;
        _quantization = quantization;
        DropoutRng = new Rng(seed ^ 0x5EED_D40F);
    }

    /// <summary>The wrapped model (its targeted layers are now <see cref="LoRALinear"/>).</summary>
    public TModel Model { get; }

    /// <summary>The generator of dropout masks (saved in checkpoints so resumed runs match).</summary>
    public Rng DropoutRng { get; }

    /// <summary>Names of the adapters, in the order they were added.</summary>
    public IEnumerable<string> Adapters => _configs.Keys.Concat(_veraConfigs.Keys);

    /// <summary>The configuration an adapter was created with.</summary>
    public LoRAConfig GetConfig(string adapter) =>
        _configs.TryGetValue(adapter, out var c) ? c
        : _veraConfigs.ContainsKey(adapter) ? throw new KeyNotFoundException($"'{adapter}' is a VeRA adapter, not LoRA: use GetVeraConfig, and VeraAdapterFile to save or load it.")
        : throw new KeyNotFoundException($"No adapter '{adapter}' (have: {string.Join(", ", _configs.Keys)}).");

    /// <summary>Adapted layers by path.</summary>
    public IEnumerable<(string Path, LoRALinear Layer)> LoRALayers =>
        Model.NamedModules().Where(m => m.Module is LoRALinear).Select(m => (m.Path, (LoRALinear)m.Module));

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

    /// <summary>Adds another adapter (inactive until <see cref="SetAdapter"/>; the first adapter is active).</summary>
    public void AddAdapter(string name, LoRAConfig config)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (_configs.ContainsKey(name) || _veraConfigs.ContainsKey(name)) throw new ArgumentException($"An adapter named '{name}' already exists.", nameof(name));
        if (_veraConfigs.Count > 0) throw new ArgumentException($"This model holds VeRA adapters; like PEFT, one PeftModel holds adapters of one method. Create another PeftModel for LoRA adapter '{name}'.", nameof(config));
        var paths = ResolveTargets(config);
        var initRng = new Rng((ulong)config.Seed * 0x9E37_79B9 + (ulong)_configs.Count + 1);
        bool first = _configs.Count == 0;
        foreach (var path in paths)
        {
            LoRAVariants.CheckBase(config, _quantization, path, (Model.GetModule(path) as LoRALinear)?.BaseLayer ?? (LinearBase)Model.GetModule(path));
            var layer = Model.GetModule(path) as LoRALinear ?? Wrap(path);
            int rank = RankWithin(config, path, layer.InFeatures, layer.OutFeatures);
            layer.AddAdapter(name, rank, config.AlphaFor(path), config, initRng);
            if (!first) layer.SetActiveAdapters(layer.ActiveAdapters.Where(a => a != name).ToArray());
        }
        _configs.Add(name, config);
        ApplyBiasMode(config.Bias);
        if (first) SetAdapter(name);
    }

    /// <summary>Makes <paramref name="names"/> the active adapters (only they train and contribute).</summary>
    public void SetAdapter(params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        if (_veraConfigs.Count > 0)
        {
            SetVeraAdapters(names);
            return;
        }
        foreach (var n in names) GetConfig(n);
        foreach (var (_, layer) in LoRALayers)
        {
            layer.SetActiveAdapters(names.Where(n => layer.AdapterNames.Contains(n)).ToArray());
            foreach (var adapter in layer.AdapterNames)
            {
                bool active = names.Contains(adapter);
                layer.LoraA(adapter).RequiresGrad = active && !layer.GetSettings(adapter).UseLoRAFA; // LoRA-FA keeps A frozen
                layer.LoraB(adapter).RequiresGrad = active;
                if (layer.Magnitude(adapter) is { } m) m.RequiresGrad = active;
                if (!active)
                {
                    layer.LoraA(adapter).ZeroGrad();
                    layer.LoraB(adapter).ZeroGrad();
                }
            }
        }
    }

    /// <summary>The active adapters.</summary>
    public IReadOnlyList<string> ActiveAdapters => LoRALayers.Select(l => l.Layer.ActiveAdapters).Concat(VeraLayers.Select(l => l.Layer.ActiveAdapters)).FirstOrDefault() ?? [];

    /// <summary>Runs the base model without adapters until the returned scope is disposed (PEFT's disable_adapter()).</summary>
    public IDisposable DisableAdapters()
    {
        foreach (var (_, layer) in LoRALayers) layer.AdaptersDisabled = true;
        SetVeraDisabled(true);
        return new Restore(() =>
        {
            foreach (var (_, layer) in LoRALayers) layer.AdaptersDisabled = false;
            SetVeraDisabled(false);
        });
    }

    /// <summary>Removes an adapter from every layer.</summary>
    public void DeleteAdapter(string name)
    {
        if (_veraConfigs.ContainsKey(name))
        {
            DeleteVeraAdapter(name);
            return;
        }
        GetConfig(name);
        foreach (var (_, layer) in LoRALayers)
            if (layer.AdapterNames.Contains(name)) layer.DeleteAdapter(name);
        _configs.Remove(name);
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
        if (_configs.ContainsKey(newName)) throw new ArgumentException($"An adapter named '{newName}' already exists.", nameof(newName));
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
        _configs[newName] = baseConfig with { Rank = newRank, Alpha = newRank, UseRsLoRA = false, UseDoRA = false, Dropout = 0f };
    }

    /// <summary>Folds the active adapters into float base weights (reversible with <see cref="Unmerge"/>).</summary>
    public void Merge()
    {
        foreach (var (_, layer) in LoRALayers) layer.Merge();
        foreach (var (_, layer) in VeraLayers) layer.Merge();
    }

    /// <summary>Undoes <see cref="Merge"/>.</summary>
    public void Unmerge()
    {
        foreach (var (_, layer) in LoRALayers) layer.Unmerge();
        foreach (var (_, layer) in VeraLayers) layer.Unmerge();
    }

    /// <summary>
    /// Replaces every adapted layer by a plain <see cref="Linear"/> holding base + active adapters and returns the
    /// model (PEFT's merge_and_unload). A 4-bit base is dequantized into a new copy first ("merge into a 16-bit copy"):
    /// re-quantizing the merged weight would round the update away, so the result is a float model. With
    /// <paramref name="storageType"/> BFloat16 or Float16 the merged weights are rounded to that precision, as a
    /// 16-bit checkpoint of them would be. After this call the PeftModel no longer manages adapters.
    /// </summary>
    public TModel MergeAndUnload(DType storageType = DType.Float32)
    {
        foreach (var (path, layer) in LoRALayers.ToList())
        {
            using var w = layer.EffectiveWeight();
            if (layer.MergedAdapters.Count > 0) layer.Unmerge();
            ReplaceWithPlain(path, layer, w, storageType);
        }
        MergeAndUnloadVera(storageType);
        _configs.Clear();
        return Model;
    }

    /// <summary>Puts a frozen plain <see cref="Linear"/> holding <paramref name="weight"/> [out, in] (rounded to <paramref name="storageType"/>) and the layer's bias in place of <paramref name="layer"/>.</summary>
    private void ReplaceWithPlain(string path, LinearBase layer, Tensor weight, DType storageType)
    {
        var plain = new Linear(layer.InFeatures, layer.OutFeatures, hasBias: layer.Bias != null);
        plain.Weight.CopyFrom(weight);
        PeftModel.RoundToStorage(plain.Weight, storageType);
        if (layer.Bias != null) plain.Bias!.CopyFrom(layer.Bias);
        plain.Freeze();
        Model.ReplaceModule(path, plain).Dispose();
    }

    /// <summary>Parameters that train (the active adapters', plus biases per the bias mode).</summary>
    public IEnumerable<Tensor> TrainableParameters() => Model.TrainableParameters();

    /// <summary>The layers an adapter adapts, with shapes and parameter counts.</summary>
    public IReadOnlyList<AdaptedLayer> Plan(string adapter = "default") => _veraConfigs.ContainsKey(adapter) ? VeraPlan(adapter) :
        LoRALayers.Where(l => l.Layer.AdapterNames.Contains(adapter)).Select(l =>
        {
            var s = l.Layer.GetSettings(adapter);
            long count = (long)s.Rank * ((s.UseLoRAFA ? 0 : l.Layer.InFeatures) + l.Layer.OutFeatures) + (s.UseDoRA ? l.Layer.OutFeatures : 0);
            return new AdaptedLayer(l.Path, l.Layer.InFeatures, l.Layer.OutFeatures, s.Rank, s.Alpha, s.Scaling, l.Layer.BaseLayer is Linear4Bit, count);
        }).ToList();

    /// <summary>PEFT's print_trainable_parameters line: "trainable params: … || all params: … || trainable%: …".</summary>
    public string TrainableParametersSummary()
    {
        var (trainable, total) = Model.CountParameters();
        total += LoRALayers.Where(l => l.Layer.BaseLayer is Linear4Bit)
            .Sum(l => (long)l.Layer.InFeatures * l.Layer.OutFeatures); // 4-bit weights are not tensors but still parameters
        total += VeraLayers.Where(l => l.Layer.BaseLayer is Linear4Bit).Sum(l => (long)l.Layer.InFeatures * l.Layer.OutFeatures);
        return string.Create(CultureInfo.InvariantCulture,
            $"trainable params: {trainable:N0} || all params: {total:N0} || trainable%: {100.0 * trainable / Math.Max(1, total):F4}");
    }

    /// <summary>A table of the adapter plan, one line per adapted layer.</summary>
    public string DescribePlan(string adapter = "default")
    {
        var sb = new StringBuilder();
        foreach (var l in Plan(adapter))
            sb.Append(CultureInfo.InvariantCulture, $"{l.Path,-44} [{l.OutFeatures}, {l.InFeatures}]{(l.Quantized ? " 4-bit" : "")}  r={l.Rank} alpha={l.Alpha} s={l.Scaling:G4}  +{l.TrainableParameters:N0}").AppendLine();
        return sb.ToString();
    }

    /// <summary>Disposes the model (and the Delta-LoRA updaters training created).</summary>
    public void Dispose()
    {
        Model.Dispose();
        VeraProjections?.Dispose();
        foreach (var updater in _deltaUpdaters.Values) updater.Dispose();
        _deltaUpdaters.Clear();
    }

    // ---- IAdaptedModel: how the trainer trains and saves it --------------------------------------------------------------

    private readonly Dictionary<string, DeltaLoRAUpdater> _deltaUpdaters = new(StringComparer.Ordinal);

    /// <inheritdoc />
    Module IAdaptedModel.TrainedModule => Model;

    /// <summary>The model as a Llama-family causal LM (adapters active), or null when it is another module.</summary>
    public Models.Llama.LlamaForCausalLM? CausalLM => Model as Models.Llama.LlamaForCausalLM;

    /// <summary>The dropout generator, then the layer drop's when one is installed on the model (checkpoints save both).</summary>
    public IReadOnlyList<Rng> RandomGenerators => AdaptedModel.Generators(Model, DropoutRng);

    /// <summary>
    /// The Delta-LoRA base update of each active adapter with <see cref="LoRAConfig.DeltaLoRA"/> settings, a new
    /// <see cref="DeltaLoRAUpdater"/> that snapshots A and B now; the model keeps it for <see cref="SaveAdapter"/> and disposes it.
    /// </summary>
    public TrainingHooks PrepareTraining()
    {
        var hooks = new List<Optim.IAfterStepHook>();
        foreach (var adapter in ActiveAdapters)
        {
            if (!_configs.TryGetValue(adapter, out var config) || config.DeltaLoRA == null) continue;
            if (_deltaUpdaters.Remove(adapter, out var previous)) previous.Dispose();
            var updater = DeltaLoRAUpdater.Create(this, adapter);
            _deltaUpdaters.Add(adapter, updater);
            hooks.Add(updater);
        }
        return hooks.Count == 0 ? TrainingHooks.None : new TrainingHooks([], hooks);
    }

    /// <summary>
    /// Writes the active adapter in its format: a PEFT LoRA folder (<see cref="PeftAdapterFile"/>), a PEFT VeRA folder
    /// (<see cref="VeraAdapterFile"/>), or for Delta-LoRA the LoRA folder plus the base change of the updater the last
    /// trainer ran (<see cref="DeltaLoRAFile"/>).
    /// </summary>
    public void SaveAdapter(string folder, string? baseModelNameOrPath = null)
    {
        string adapter = AdaptedModel.SingleActive(ActiveAdapters, _veraConfigs.Count > 0 ? "VeRA" : "LoRA");
        if (_veraConfigs.ContainsKey(adapter)) VeraAdapterFile.Save(this, folder, adapter, baseModelNameOrPath);
        else if (GetConfig(adapter).DeltaLoRA == null) PeftAdapterFile.Save(this, folder, adapter, baseModelNameOrPath);
        else
        {
            if (!_deltaUpdaters.TryGetValue(adapter, out var updater)) _deltaUpdaters.Add(adapter, updater = DeltaLoRAUpdater.Create(this, adapter));
            DeltaLoRAFile.Save(this, updater, folder, baseModelNameOrPath);
        }
    }

    private LoRALinear Wrap(string path)
    {
        var original = (LinearBase)Model.GetModule(path);
        LinearBase baseLayer = original;
        if (_quantization is { } q && original is Linear linear)
            baseLayer = Linear4Bit.FromLinear(linear, q.Type, q.BlockSize, q.DoubleQuant);
        var wrapped = new LoRALinear(baseLayer, DropoutRng);
        Model.ReplaceModule(path, wrapped);
        if (!ReferenceEquals(baseLayer, original)) original.Dispose(); // its float weight now lives on as 4-bit codes
        return wrapped;
    }

    private IReadOnlyList<string> ResolveTargets(LoRAConfig config) =>
        ResolveTargets(config, Model.NamedModules().Where(m => m.Module is LinearBase && !IsInsideAdapter(m.Path)).Select(m => m.Path).ToList());

    /// <summary>
    /// The paths among <paramref name="linears"/> (a model's linear layers, in module order) that <paramref name="config"/>
    /// adapts, with an error for a target that matches nothing (naming close layer names) or a selection left empty.
    /// </summary>
    internal static IReadOnlyList<string> ResolveTargets(LoRAConfig config, IReadOnlyList<string> linears)
    {
        var selected = linears.Where(p => config.Targets.Matches(p)).ToList();
        foreach (var name in config.Targets.Names)
            if (!linears.Any(p => TargetModules.MatchesName(p, name)))
                throw new ArgumentException(UnknownTargetMessage(name, linears), nameof(config));
        if (config.Targets.Pattern != null && selected.Count == 0)
            throw new ArgumentException($"Target regex '{config.Targets.Pattern}' matches no linear layer. Layer paths look like '{linears.FirstOrDefault()}'.", nameof(config));
        selected = selected.Where(p => !config.Exclude.Any(e => TargetModules.MatchesName(p, e))).ToList();
        if (config.Layers is { } layers)
            selected = selected.Where(p => layers.Any(i => p.Contains($"layers.{i}.", StringComparison.Ordinal))).ToList();
        if (selected.Count == 0) throw new ArgumentException($"The targets '{config.Targets}' leave no layer to adapt after exclusions and layer filters.", nameof(config));
        return selected;
    }

    /// <summary>The rank <paramref name="config"/> gives the layer at <paramref name="path"/>, checked against min(in, out) of that layer.</summary>
    internal static int RankWithin(LoRAConfig config, string path, int inFeatures, int outFeatures)
    {
        int rank = config.RankFor(path);
        int limit = Math.Min(inFeatures, outFeatures);
        if (rank > limit)
            throw new ArgumentException($"LoRA rank {rank} for '{path}' exceeds min(in, out) = {limit} of that layer.", nameof(config));
        return rank;
    }

    private static bool IsInsideAdapter(string path) =>
        path.Contains(".lora_A.", StringComparison.Ordinal) || path.Contains(".lora_B.", StringComparison.Ordinal) || path.EndsWith(".base_layer", StringComparison.Ordinal);

    private static string UnknownTargetMessage(string name, IReadOnlyList<string> linears)
    {
        var leafNames = linears.Select(p => p[(p.LastIndexOf('.') + 1)..]).Distinct().ToList();
        var closest = leafNames.OrderBy(n => Levenshtein(n, name)).FirstOrDefault();
        var hint = closest != null && Levenshtein(closest, name) <= Math.Max(2, name.Length / 3) ? $" Did you mean '{closest}'?" : "";
        return $"Target '{name}' matches no linear layer.{hint} Linear layers here: {string.Join(", ", leafNames)}.";
    }

    internal static int Levenshtein(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
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

    private sealed class Restore(Action action) : IDisposable
    {
        private Action? _action = action;

        public void Dispose()
        {
            _action?.Invoke();
            _action = null;
        }
    }
}

/// <summary>Entry points that infer the model type.</summary>
public static partial class PeftModel
{
    /// <summary>Adds LoRA (or QLoRA with <paramref name="quantization"/>) to <paramref name="model"/>.</summary>
    public static PeftModel<TModel> Create<TModel>(TModel model, LoRAConfig config, QuantizationConfig? quantization = null, string adapterName = "default")
        where TModel : Module => PeftModel<TModel>.Create(model, config, quantization, adapterName);

    /// <summary>Adds (IA)³ to <paramref name="model"/>.</summary>
    public static IA3Model<TModel> Create<TModel>(TModel model, IA3Config config, string adapterName = "default")
        where TModel : Module => IA3Model<TModel>.Create(model, config, adapterName);

    /// <summary>Adds prompt tuning, P-tuning or prefix tuning to <paramref name="model"/> (a tokenizer only for prompt tuning's text init).</summary>
    public static PromptLearningModel Create(Models.Llama.LlamaForCausalLM model, PromptLearningConfig config, Text.ITokenizer? tokenizer = null, string adapterName = "default") =>
        PromptLearningModel.Create(model, config, tokenizer, adapterName);

    /// <summary>
    /// Whether <paramref name="config"/> adapts the linear layer at <paramref name="path"/>: its targets select it and
    /// neither its exclusions nor its layer filter drop it (PEFT's rules; generated code checks layers with it).
    /// </summary>
    public static bool Adapts(LoRAConfig config, string path)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(path);
        return TargetModules.Selects(config.Targets, config.Exclude, config.Layers, path);
    }

    /// <summary>
    /// Rounds float32 <paramref name="weight"/> in place to the nearest value of <paramref name="storageType"/> (nothing
    /// for Float32), as a checkpoint in that dtype stores it: how <see cref="PeftModel{TModel}.MergeAndUnload"/> leaves merged weights.
    /// </summary>
    internal static void RoundToStorage(Tensor weight, DType storageType)
    {
        if (storageType == DType.Float32) return;
        using var narrow = weight.To(storageType);
        using var wide = narrow.To(DType.Float32);
        weight.CopyFrom(wide);
    }

    /// <summary>The rank <paramref name="config"/> gives the layer at <paramref name="path"/>: its rank_pattern entry, else its rank.</summary>
    public static int RankFor(LoRAConfig config, string path)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(path);
        return config.RankFor(path);
    }
}
