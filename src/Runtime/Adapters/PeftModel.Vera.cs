using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Adapters;

// VeRA adapters of PeftModel: created with PeftModel.Create(model, VeraConfig), managed by the same add / activate /
// disable / delete / merge / unload / plan members as LoRA. Like PEFT, one PeftModel holds adapters of one method.
public sealed partial class PeftModel<TModel>
{
    private readonly Dictionary<string, VeraConfig> _veraConfigs = new(StringComparer.Ordinal);

    /// <summary>The VeRA projections shared by every VeRA adapter of this model, or null when it has none.</summary>
    public VeraProjections? VeraProjections { get; private set; }

    /// <summary>VeRA-adapted layers by path.</summary>
    public IEnumerable<(string Path, VeraLinear Layer)> VeraLayers =>
        Model.NamedModules().Where(m => m.Module is VeraLinear).Select(m => (m.Path, (VeraLinear)m.Module));

    /// <summary>True when <paramref name="adapter"/> is a VeRA adapter of this model.</summary>
    public bool IsVeraAdapter(string adapter) => _veraConfigs.ContainsKey(adapter);

    /// <summary>The configuration a VeRA adapter was created with.</summary>
    public VeraConfig GetVeraConfig(string adapter) =>
        _veraConfigs.TryGetValue(adapter, out var c) ? c : throw new KeyNotFoundException($"No VeRA adapter '{adapter}' (have: {string.Join(", ", _veraConfigs.Keys)}).");

    /// <summary>
    /// Adds VeRA to <paramref name="model"/>: the targeted layers get per-layer vectors b and d over projections shared
    /// by all of them (generated from <see cref="VeraConfig.ProjectionSeed"/>, sized to the widest targeted layer).
    /// With <paramref name="quantization"/> the targeted bases are stored 4-bit. The base model is frozen.
    /// </summary>
    /// <exception cref="ArgumentException">A target matches nothing or a setting is invalid.</exception>
    public static PeftModel<TModel> Create(TModel model, VeraConfig config, QuantizationConfig? quantization = null, string adapterName = "default") =>
        CreateVera(model, config, quantization, adapterName, null);

    internal static PeftModel<TModel> CreateVera(TModel model, VeraConfig config, QuantizationConfig? quantization, string adapterName, VeraProjections? projections)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var peft = new PeftModel<TModel>(model, quantization, (ulong)config.Seed);
        model.Freeze();
        peft.AddVeraAdapter(adapterName, config, projections);
        return peft;
    }

    /// <summary>Adds another VeRA adapter (inactive until <see cref="SetAdapter"/>); it shares the model's projections.</summary>
    /// <exception cref="ArgumentException">
    /// The name exists, the model holds LoRA adapters, the projection seed differs from the first adapter's, or the
    /// projections do not cover a targeted layer at this rank.
    /// </exception>
    public void AddAdapter(string name, VeraConfig config) => AddVeraAdapter(name, config, null);

    internal void AddVeraAdapter(string name, VeraConfig config, VeraProjections? loaded)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (_configs.ContainsKey(name) || _veraConfigs.ContainsKey(name)) throw new ArgumentException($"An adapter named '{name}' already exists.", nameof(name));
        if (_configs.Count > 0) throw new ArgumentException($"This model holds LoRA adapters; like PEFT, one PeftModel holds adapters of one method. Create another PeftModel for VeRA adapter '{name}'.", nameof(config));
        var first = _veraConfigs.Values.FirstOrDefault();
        if (first != null && first.ProjectionSeed != config.ProjectionSeed)
            throw new ArgumentException($"VeRA projection seed {config.ProjectionSeed} of adapter '{name}' differs from {first.ProjectionSeed}, the seed of the projections this model's VeRA adapters share (PEFT's projection_prng_key must match too).", nameof(config));
        if (first != null && first.SaveProjection != config.SaveProjection)
            throw new ArgumentException($"VeRA adapters of one model must all save their projections or none (adapter '{name}' has SaveProjection = {config.SaveProjection}).", nameof(config));
        var paths = ResolveTargets(new LoRAConfig { Targets = config.Targets, Exclude = config.Exclude, Layers = config.Layers });
        var layers = paths.Select(p => (Path: p, Layer: (LinearBase)Model.GetModule(p))).ToList();
        foreach (var (path, layer) in layers)
            if (layer is LoRALinear)
                throw new ArgumentException($"'{path}' already carries LoRA adapters; PeftGen does not stack VeRA on LoRA.", nameof(config));
        var projections = VeraProjections ?? loaded
            ?? VeraProjections.Generate(config.Rank, layers.Max(l => l.Layer.InFeatures), layers.Max(l => l.Layer.OutFeatures), config.ProjectionSeed);
        try
        {
            foreach (var (path, layer) in layers) projections.CheckCovers(path, config.Rank, layer.InFeatures, layer.OutFeatures);
        }
        catch when (VeraProjections == null && !ReferenceEquals(projections, loaded))
        {
            projections.Dispose();
            throw;
        }
        VeraProjections = projections;
        bool firstAdapter = _veraConfigs.Count == 0;
        foreach (var (path, _) in layers)
        {
            var layer = Model.GetModule(path) as VeraLinear ?? WrapVera(path);
            layer.AddAdapter(name, config.Rank, config.Dropout, config.DInitial, projections, path);
            if (!firstAdapter) layer.SetActiveAdapters(layer.ActiveAdapters.Where(a => a != name).ToArray());
        }
        _veraConfigs.Add(name, config);
        if (firstAdapter) SetVeraAdapters([name]);
        else
            foreach (var (_, layer) in VeraLayers.Where(l => l.Layer.AdapterNames.Contains(name)))
                layer.LambdaB(name).RequiresGrad = layer.LambdaD(name).RequiresGrad = false;
    }

    private void SetVeraAdapters(string[] names)
    {
        foreach (var n in names) GetVeraConfig(n);
        foreach (var (_, layer) in VeraLayers)
        {
            layer.SetActiveAdapters(names.Where(n => layer.AdapterNames.Contains(n)).ToArray());
            foreach (var adapter in layer.AdapterNames)
            {
                bool active = names.Contains(adapter);
                layer.LambdaB(adapter).RequiresGrad = active;
                layer.LambdaD(adapter).RequiresGrad = active;
                if (active) continue;
                layer.LambdaB(adapter).ZeroGrad();
                layer.LambdaD(adapter).ZeroGrad();
            }
        }
    }

    private void SetVeraDisabled(bool disabled)
    {
        foreach (var (_, layer) in VeraLayers) layer.AdaptersDisabled = disabled;
    }

    private void DeleteVeraAdapter(string name)
    {
        foreach (var (_, layer) in VeraLayers)
            if (layer.AdapterNames.Contains(name)) layer.DeleteAdapter(name);
        _veraConfigs.Remove(name);
    }

    /// <summary>Replaces every VeRA layer by a plain Linear holding base + active adapters (see <see cref="MergeAndUnload"/>).</summary>
    private void MergeAndUnloadVera(DType storageType)
    {
        foreach (var (path, layer) in VeraLayers.ToList())
        {
            using var w = layer.EffectiveWeight();
            if (layer.MergedAdapters.Count > 0) layer.Unmerge();
            ReplaceWithPlain(path, layer, w, storageType);
        }
        _veraConfigs.Clear();
    }

    /// <summary>VeRA's plan: rank r, scaling 1, trainable out + r per layer.</summary>
    private IReadOnlyList<AdaptedLayer> VeraPlan(string adapter) =>
        VeraLayers.Where(l => l.Layer.AdapterNames.Contains(adapter)).Select(l =>
        {
            var s = l.Layer.GetSettings(adapter);
            return new AdaptedLayer(l.Path, l.Layer.InFeatures, l.Layer.OutFeatures, s.Rank, 1f, 1f, l.Layer.BaseLayer is Linear4Bit,
                (long)l.Layer.OutFeatures + s.Rank);
        }).ToList();

    private VeraLinear WrapVera(string path)
    {
        var original = (LinearBase)Model.GetModule(path);
        LinearBase baseLayer = original;
        if (_quantization is { } q && original is Linear linear)
            baseLayer = Linear4Bit.FromLinear(linear, q.Type, q.BlockSize, q.DoubleQuant);
        var wrapped = new VeraLinear(baseLayer, DropoutRng);
        Model.ReplaceModule(path, wrapped);
        if (!ReferenceEquals(baseLayer, original)) original.Dispose();
        return wrapped;
    }
}

public static partial class PeftModel
{
    /// <summary>Adds VeRA (over a 4-bit base with <paramref name="quantization"/>) to <paramref name="model"/>.</summary>
    public static PeftModel<TModel> Create<TModel>(TModel model, VeraConfig config, QuantizationConfig? quantization = null, string adapterName = "default")
        where TModel : Module => PeftModel<TModel>.Create(model, config, quantization, adapterName);
}
