using System.Globalization;
using System.Text;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.IA3;

/// <summary>One layer an (IA)³ adapter adapts: where, its shape, which side it scales and its trainable parameters.</summary>
/// <param name="Path">Module path, e.g. model.layers.0.self_attn.k_proj.</param>
/// <param name="InFeatures">Input size.</param>
/// <param name="OutFeatures">Output size.</param>
/// <param name="FeedForward">The vector scales the input (in channels) rather than the output (out channels).</param>
/// <param name="TrainableParameters">The vector's length: in for a feed-forward layer, out otherwise.</param>
public sealed record IA3AdaptedLayer(string Path, int InFeatures, int OutFeatures, bool FeedForward, long TrainableParameters);

/// <summary>
/// A model with (IA)³ adapters (PEFT's <c>IA3Model</c> under a <c>PeftModel</c>): wraps targeted linear layers in
/// <see cref="IA3Linear"/>, freezes everything else and manages named adapters: add, activate, disable, delete, merge
/// and unload. Trainable parameters: the sum of the vectors' channel counts.
/// </summary>
public sealed class IA3Model<TModel> : IAdaptedModel where TModel : Module
{
    private readonly Dictionary<string, IA3Config> _configs = new(StringComparer.Ordinal);

    private IA3Model(TModel model) => Model = model;

    /// <summary>The wrapped model (its targeted layers are now <see cref="IA3Linear"/>).</summary>
    public TModel Model { get; }

    /// <summary>Names of the adapters, in the order they were added.</summary>
    public IEnumerable<string> Adapters => _configs.Keys;

    /// <summary>The configuration an adapter was created with.</summary>
    public IA3Config GetConfig(string adapter) =>
        _configs.TryGetValue(adapter, out var c) ? c : throw new KeyNotFoundException($"No adapter '{adapter}' (have: {string.Join(", ", _configs.Keys)}).");

    /// <summary>Adapted layers by path.</summary>
    public IEnumerable<(string Path, IA3Linear Layer)> IA3Layers =>
        Model.NamedModules().Where(m => m.Module is IA3Linear).Select(m => (m.Path, (IA3Linear)m.Module));

    /// <summary>Adds (IA)³ to <paramref name="model"/>. The whole base model is frozen; only the vectors train.</summary>
    /// <exception cref="ArgumentException">A target matches nothing (the message lists close names) or a setting is invalid.</exception>
    public static IA3Model<TModel> Create(TModel model, IA3Config config, string adapterName = "default")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        var ia3 = new IA3Model<TModel>(model);
        config.Validate();
        ia3.ResolveTargets(config); // check before freezing, so a bad config leaves the model untouched
        model.Freeze();
        ia3.AddAdapter(adapterName, config);
        return ia3;
    }

    /// <summary>Adds another adapter (inactive until <see cref="SetAdapter"/>; the first adapter is active).</summary>
    /// <exception cref="ArgumentException">The name is taken, a target matches nothing, or a layer is already adapted with the other side (feed-forward or not).</exception>
    public void AddAdapter(string name, IA3Config config)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (_configs.ContainsKey(name)) throw new ArgumentException($"An adapter named '{name}' already exists.", nameof(name));
        var paths = ResolveTargets(config);
        foreach (var path in paths)
            if (Model.GetModule(path) is IA3Linear existing && existing.IsFeedForward != config.IsFeedForward(path))
                throw new ArgumentException($"'{path}' already scales its {(existing.IsFeedForward ? "input" : "output")} for another adapter; adapter '{name}' would scale its {(existing.IsFeedForward ? "output" : "input")}. Keep feedforward modules the same across adapters.", nameof(config));
        var random = new Random(config.Seed);
        bool first = _configs.Count == 0;
        foreach (var path in paths)
        {
            var layer = Model.GetModule(path) as IA3Linear ?? Wrap(path, config.IsFeedForward(path));
            layer.AddAdapter(name, config.InitWeights, random);
            if (!first) layer.SetActiveAdapters(layer.ActiveAdapters.Where(a => a != name).ToArray());
        }
        _configs.Add(name, config);
        if (first) SetAdapter(name);
    }

    /// <summary>Makes <paramref name="names"/> the active adapters (only they train and contribute; their vectors multiply).</summary>
    public void SetAdapter(params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        foreach (var n in names) GetConfig(n);
        foreach (var (_, layer) in IA3Layers)
        {
            layer.SetActiveAdapters(names.Where(n => layer.AdapterNames.Contains(n)).ToArray());
            foreach (var adapter in layer.AdapterNames)
            {
                bool active = names.Contains(adapter);
                layer.Vector(adapter).RequiresGrad = active;
                if (!active) layer.Vector(adapter).ZeroGrad();
            }
        }
    }

    /// <summary>The active adapters.</summary>
    public IReadOnlyList<string> ActiveAdapters => AdaptedLayers.Active(IA3Layers.Select(l => (AdaptedLinear)l.Layer));

    /// <summary>Runs the base model without adapters until the returned scope is disposed (PEFT's disable_adapter()).</summary>
    public IDisposable DisableAdapters() => AdaptedLayers.Disable(IA3Layers.Select(l => (AdaptedLinear)l.Layer).ToList());

    /// <summary>Removes an adapter from every layer.</summary>
    public void DeleteAdapter(string name)
    {
        GetConfig(name);
        AdaptedLayers.Delete(IA3Layers.Select(l => (AdaptedLinear)l.Layer), name);
        _configs.Remove(name);
    }

    /// <summary>Folds the active adapters into float base weights (reversible with <see cref="Unmerge"/>).</summary>
    public void Merge() => AdaptedLayers.Merge(IA3Layers.Select(l => (AdaptedLinear)l.Layer));

    /// <summary>Undoes <see cref="Merge"/>.</summary>
    public void Unmerge() => AdaptedLayers.Unmerge(IA3Layers.Select(l => (AdaptedLinear)l.Layer));

    /// <summary>
    /// Replaces every adapted layer by a plain, frozen <see cref="Linear"/> holding the base scaled by the active adapters
    /// and returns the model (PEFT's merge_and_unload). After this call the IA3Model no longer manages adapters.
    /// </summary>
    public TModel MergeAndUnload()
    {
        foreach (var (path, layer) in IA3Layers.ToList())
        {
            if (layer.MergedAdapters.Count > 0) layer.Unmerge();
            using var w = layer.EffectiveWeight();
            using var b = layer.EffectiveBias();
            var plain = new Linear(layer.InFeatures, layer.OutFeatures, hasBias: b != null);
            plain.Weight.CopyFrom(w);
            if (b != null) plain.Bias!.CopyFrom(b);
            plain.Freeze();
            Model.ReplaceModule(path, plain).Dispose();
        }
        _configs.Clear();
        return Model;
    }

    /// <summary>Parameters that train (the active adapters' vectors).</summary>
    public IEnumerable<Tensor> TrainableParameters() => Model.TrainableParameters();

    /// <summary>The layers an adapter adapts, with shapes and parameter counts.</summary>
    public IReadOnlyList<IA3AdaptedLayer> Plan(string adapter = "default") =>
        IA3Layers.Where(l => l.Layer.AdapterNames.Contains(adapter))
            .Select(l => new IA3AdaptedLayer(l.Path, l.Layer.InFeatures, l.Layer.OutFeatures, l.Layer.IsFeedForward, l.Layer.Channels))
            .ToList();

    /// <summary>PEFT's print_trainable_parameters line: "trainable params: … || all params: … || trainable%: …".</summary>
    public string TrainableParametersSummary()
    {
        var (trainable, total) = Model.CountParameters();
        return string.Create(CultureInfo.InvariantCulture,
            $"trainable params: {trainable:N0} || all params: {total:N0} || trainable%: {100.0 * trainable / Math.Max(1, total):F4}");
    }

    /// <summary>A table of the adapter plan, one line per adapted layer.</summary>
    public string DescribePlan(string adapter = "default")
    {
        var sb = new StringBuilder();
        foreach (var l in Plan(adapter))
            sb.Append(CultureInfo.InvariantCulture, $"{l.Path,-44} [{l.OutFeatures}, {l.InFeatures}]  scales {(l.FeedForward ? "input" : "output")}  +{l.TrainableParameters:N0}").AppendLine();
        return sb.ToString();
    }

    /// <summary>Disposes the model.</summary>
    public void Dispose() => Model.Dispose();

    // ---- IAdaptedModel: how the trainer trains and saves it --------------------------------------------------------------

    /// <inheritdoc />
    Module IAdaptedModel.TrainedModule => Model;

    /// <summary>The model as a Llama-family causal LM (adapters active), or null when it is another module.</summary>
    public Models.Llama.LlamaForCausalLM? CausalLM => Model as Models.Llama.LlamaForCausalLM;

    /// <summary>(IA)³ draws nothing at random; the layer drop's generator when one is installed on the model.</summary>
    public IReadOnlyList<Rng> RandomGenerators => AdaptedModel.Generators(Model);

    /// <summary>(IA)³ trains with the optimizer alone.</summary>
    public TrainingHooks PrepareTraining() => TrainingHooks.None;

    /// <summary>Writes the active adapter in PEFT's format (<see cref="IA3AdapterFile"/>).</summary>
    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        IA3AdapterFile.Save(this, folder, AdaptedModel.SingleActive(ActiveAdapters, "(IA)³"), baseModelNameOrPath);

    private IA3Linear Wrap(string path, bool feedForward)
    {
        var wrapped = new IA3Linear((LinearBase)Model.GetModule(path), feedForward);
        Model.ReplaceModule(path, wrapped);
        return wrapped;
    }

    private IReadOnlyList<string> ResolveTargets(IA3Config config)
    {
        var linears = TargetModules.LinearPaths(Model);
        foreach (var name in config.Targets.Names)
            if (!linears.Any(p => TargetModules.MatchesName(p, name)))
                throw new ArgumentException(TargetModules.UnknownName("IA3 target", name, linears), nameof(config));
        if (config.FeedForward is { } ff)
            foreach (var name in ff.Names)
                if (!linears.Any(p => TargetModules.MatchesName(p, name)))
                    throw new ArgumentException(TargetModules.UnknownName("IA3 feedforward module", name, linears), nameof(config));
        var selected = linears.Where(p => config.Targets.Matches(p) && !config.Exclude.Any(e => TargetModules.MatchesName(p, e))).ToList();
        if (selected.Count == 0)
            throw new ArgumentException($"The IA3 targets '{config.Targets}' leave no layer to adapt after exclusions. Layer paths look like '{linears.FirstOrDefault()}'.", nameof(config));
        if (config.FeedForward is { } feedForward && !selected.Any(feedForward.Matches))
            throw new ArgumentException($"IA3 feedforward modules '{feedForward}' match none of the targeted layers ({config.Targets}); feedforward modules must be a subset of the targets.", nameof(config));
        return selected;
    }
}

/// <summary>Entry points that infer the model type.</summary>
public static class IA3Model
{
    /// <summary>Adds (IA)³ to <paramref name="model"/>; see <see cref="IA3Model{TModel}.Create"/>.</summary>
    public static IA3Model<TModel> Create<TModel>(TModel model, IA3Config config, string adapterName = "default") where TModel : Module =>
        IA3Model<TModel>.Create(model, config, adapterName);
}
