using System.Globalization;
using System.Text;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Methods;

/// <summary>
/// What the models of methods that wrap targeted linear layers in <see cref="AdaptedLinear"/> layers share (LoRA's
/// <c>PeftModel</c>, VeRA's <c>VeraModel</c>; PEFT's <c>BaseTuner</c>): the wrapped model, the generator of dropout
/// masks, named adapters with the configuration each was created with, which of them are active, disable, delete, merge,
/// unmerge, merge-and-unload, the plan and PEFT's parameter summary. Like PEFT, one model holds adapters of one method:
/// the derived model adds them (wrapping layers with <see cref="Wrap"/>) and says which of a layer's tensors train.
/// </summary>
/// <typeparam name="TModel">The wrapped model's type.</typeparam>
/// <typeparam name="TLayer">The method's adapted layer.</typeparam>
/// <typeparam name="TConfig">The method's adapter configuration.</typeparam>
public abstract class AdaptedModel<TModel, TLayer, TConfig> : IAdaptedModel
    where TModel : Module where TLayer : AdaptedLinear where TConfig : class
{
    private readonly Dictionary<string, TConfig> _configs = new(StringComparer.Ordinal);

    // Only this assembly's methods derive: the members below assume an adapted layer the model wraps itself.
    private protected AdaptedModel(TModel model, QuantizationConfig? quantization, ulong seed)
    {
        Model = model;
        Quantization = quantization;
        DropoutRng = new Rng(seed ^ 0x5EED_D40F);
    }

    /// <summary>The wrapped model (its targeted layers are now the method's adapted layers).</summary>
    public TModel Model { get; }

    /// <summary>The generator of dropout masks (saved in checkpoints so resumed runs match).</summary>
    public Rng DropoutRng { get; }

    /// <summary>Names of the adapters, in the order they were added.</summary>
    public IEnumerable<string> Adapters => _configs.Keys;

    /// <summary>The configuration an adapter was created with.</summary>
    /// <exception cref="KeyNotFoundException">No adapter has that name.</exception>
    public TConfig GetConfig(string adapter) =>
        _configs.TryGetValue(adapter, out var c) ? c : throw new KeyNotFoundException($"No adapter '{adapter}' (have: {string.Join(", ", _configs.Keys)}).");

    /// <summary>Makes <paramref name="names"/> the active adapters (only they train and contribute).</summary>
    /// <exception cref="KeyNotFoundException">A name is not an adapter of this model.</exception>
    public void SetAdapter(params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        foreach (var n in names) GetConfig(n);
        foreach (var (_, layer) in WrappedLayers)
        {
            layer.SetActiveAdapters(names.Where(n => layer.AdapterNames.Contains(n)).ToArray());
            foreach (var adapter in layer.AdapterNames) SetTrainable(layer, adapter, names.Contains(adapter));
        }
    }

    /// <summary>The active adapters.</summary>
    public IReadOnlyList<string> ActiveAdapters => AdaptedLayers.Active(WrappedLayers.Select(l => (AdaptedLinear)l.Layer));

    /// <summary>Runs the base model without adapters until the returned scope is disposed (PEFT's disable_adapter()).</summary>
    public IDisposable DisableAdapters() => AdaptedLayers.Disable(WrappedLayers.Select(l => (AdaptedLinear)l.Layer).ToList());

    /// <summary>Removes an adapter from every layer.</summary>
    /// <exception cref="KeyNotFoundException">No adapter has that name.</exception>
    public void DeleteAdapter(string name)
    {
        GetConfig(name);
        AdaptedLayers.Delete(WrappedLayers.Select(l => (AdaptedLinear)l.Layer), name);
        _configs.Remove(name);
    }

    /// <summary>Folds the active adapters into float base weights (reversible with <see cref="Unmerge"/>).</summary>
    public void Merge() => AdaptedLayers.Merge(WrappedLayers.Select(l => (AdaptedLinear)l.Layer));

    /// <summary>Undoes <see cref="Merge"/>.</summary>
    public void Unmerge() => AdaptedLayers.Unmerge(WrappedLayers.Select(l => (AdaptedLinear)l.Layer));

    /// <summary>
    /// Replaces every adapted layer by a plain <see cref="Linear"/> holding base + active adapters and returns the
    /// model (PEFT's merge_and_unload). A 4-bit base is dequantized into a new copy first ("merge into a 16-bit copy"):
    /// re-quantizing the merged weight would round the update away, so the result is a float model. With
    /// <paramref name="storageType"/> BFloat16 or Float16 the merged weights are rounded to that precision, as a
    /// 16-bit checkpoint of them would be. After this call the model no longer manages adapters.
    /// </summary>
    public TModel MergeAndUnload(DType storageType = DType.Float32)
    {
        foreach (var (path, layer) in WrappedLayers.ToList())
        {
            using var w = layer.EffectiveWeight();                                                 // [out, in]
            if (layer.MergedAdapters.Count > 0) layer.Unmerge();
            var plain = new Linear(layer.InFeatures, layer.OutFeatures, hasBias: layer.Bias != null);
            plain.Weight.CopyFrom(w);
            AdaptedModel.RoundToStorage(plain.Weight, storageType);
            if (layer.Bias != null) plain.Bias!.CopyFrom(layer.Bias);
            plain.Freeze();
            Model.ReplaceModule(path, plain).Dispose();
        }
        _configs.Clear();
        return Model;
    }

    /// <summary>Parameters that train (the active adapters', plus whatever else the method lets train).</summary>
    public IEnumerable<Tensor> TrainableParameters() => Model.TrainableParameters();

    /// <summary>The layers an adapter adapts, with shapes and parameter counts.</summary>
    public IReadOnlyList<AdaptedLayer> Plan(string adapter = "default") =>
        WrappedLayers.Where(l => l.Layer.AdapterNames.Contains(adapter)).Select(l => PlanRow(l.Path, l.Layer, adapter)).ToList();

    /// <summary>PEFT's print_trainable_parameters line: "trainable params: … || all params: … || trainable%: …".</summary>
    public string TrainableParametersSummary()
    {
        var (trainable, total) = Model.CountParameters();
        total += WrappedLayers.Where(l => l.Layer.BaseLayer is Linear4Bit)
            .Sum(l => (long)l.Layer.InFeatures * l.Layer.OutFeatures); // 4-bit weights are not tensors but still parameters
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

    // ---- IAdaptedModel: how the trainer trains and saves it ---------------------------------------------------------

    /// <inheritdoc />
    Module IAdaptedModel.TrainedModule => Model;

    /// <summary>The model as a Llama-family causal LM (adapters active), or null when it is another module.</summary>
    public Models.Llama.LlamaForCausalLM? CausalLM => Model as Models.Llama.LlamaForCausalLM;

    /// <summary>The dropout generator, then the layer drop's when one is installed on the model (checkpoints save both).</summary>
    public IReadOnlyList<Rng> RandomGenerators => AdaptedModel.Generators(Model, DropoutRng);

    /// <inheritdoc />
    public virtual TrainingHooks PrepareTraining() => TrainingHooks.None;

    /// <inheritdoc />
    public abstract void SaveAdapter(string folder, string? baseModelNameOrPath = null);

    /// <summary>Disposes the model and what the adapters share.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Disposes the model; a derived model also releases what its adapters share.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (disposing) Model.Dispose();
    }

    // ---- for the derived method ---------------------------------------------------------------------------------

    /// <summary>How the targeted layers' bases are stored (4-bit for QLoRA), or null for as they are.</summary>
    private protected QuantizationConfig? Quantization { get; }

    /// <summary>The adapted layers by path, in module order.</summary>
    private protected IEnumerable<(string Path, TLayer Layer)> WrappedLayers =>
        Model.NamedModules().Where(m => m.Module is TLayer).Select(m => (m.Path, (TLayer)m.Module));

    /// <summary>Adapters added so far.</summary>
    private protected int AdapterCount => _configs.Count;

    /// <summary>True when an adapter is named <paramref name="name"/>.</summary>
    private protected bool HasAdapter(string name) => _configs.ContainsKey(name);

    /// <summary>Records the configuration of adapter <paramref name="name"/> (added or replaced).</summary>
    private protected void SetConfig(string name, TConfig config) => _configs[name] = config;

    /// <summary>The paths of the model's linear layers that the targets select (see <see cref="TargetModules.Resolve"/>).</summary>
    private protected IReadOnlyList<string> ResolveTargets(TargetModules targets, IReadOnlyList<string> exclude, IReadOnlyList<int>? layers) =>
        TargetModules.Resolve(targets, exclude, layers, TargetModules.LinearPaths(Model));

    /// <summary>
    /// Replaces the linear layer at <paramref name="path"/> by the adapted layer <paramref name="create"/> builds around it,
    /// quantizing a float base to 4 bits first when the model has a <see cref="Quantization"/>.
    /// </summary>
    private protected TLayer Wrap(string path, Func<LinearBase, TLayer> create)
    {
        var original = (LinearBase)Model.GetModule(path);
        LinearBase baseLayer = original;
        if (Quantization is { } q && original is Linear linear)
            baseLayer = Linear4Bit.FromLinear(linear, q.Type, q.BlockSize, q.DoubleQuant);
        var wrapped = create(baseLayer);
        Model.ReplaceModule(path, wrapped);
        if (!ReferenceEquals(baseLayer, original)) original.Dispose(); // its float weight now lives on as 4-bit codes
        return wrapped;
    }

    /// <summary>Lets the tensors of <paramref name="adapter"/> on <paramref name="layer"/> train when <paramref name="active"/>, else freezes them and clears their gradients.</summary>
    private protected abstract void SetTrainable(TLayer layer, string adapter, bool active);

    /// <summary>The plan row of <paramref name="adapter"/> on <paramref name="layer"/>.</summary>
    private protected abstract AdaptedLayer PlanRow(string path, TLayer layer, string adapter);
}

/// <summary>Helpers of the adapted-layer models that do not depend on their type parameters.</summary>
internal static class AdaptedModel
{
    /// <summary>
    /// Rounds float32 <paramref name="weight"/> in place to the nearest value of <paramref name="storageType"/> (nothing
    /// for Float32), as a checkpoint in that dtype stores it: how merge-and-unload leaves merged weights.
    /// </summary>
    internal static void RoundToStorage(Tensor weight, DType storageType)
    {
        if (storageType == DType.Float32) return;
        using var narrow = weight.To(storageType);
        using var wide = narrow.To(DType.Float32);
        weight.CopyFrom(wide);
    }

    /// <summary>
    /// <paramref name="own"/> followed by the generator of a random hook installed on <paramref name="model"/> (layer drop's,
    /// when it is a Llama whose layer-skip hook draws from one not already among them): the order checkpoints save them in.
    /// </summary>
    internal static IReadOnlyList<Rng> Generators(Module model, params Rng[] own)
    {
        if (model is Models.Llama.LlamaForCausalLM { Model.LayerSkip: IRandomHook hook } && !own.Any(r => ReferenceEquals(r, hook.Rng))) return [.. own, hook.Rng];
        return own;
    }

    /// <summary>The one active adapter, which <see cref="IAdaptedModel.SaveAdapter"/> saves.</summary>
    internal static string SingleActive(IReadOnlyList<string> active, string method) => active.Count switch
    {
        1 => active[0],
        0 => throw new InvalidOperationException($"No {method} adapter is active: activate the adapter to save with SetAdapter."),
        _ => throw new InvalidOperationException(
            $"Adapters {string.Join(", ", active)} are all active: SaveAdapter saves one. Activate one with SetAdapter, or save each with its file format's Save."),
    };
}

/// <summary>
/// A model hook that draws from a random generator (layer drop's layer-skip decision): adapted models report its generator
/// to the trainer so checkpoints save it and gradient checkpointing replays it.
/// </summary>
internal interface IRandomHook
{
    /// <summary>The generator the hook draws from.</summary>
    Rng Rng { get; }
}
