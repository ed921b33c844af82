using PeftGen.Nn;
using PeftGen.Quantization;

namespace PeftGen.Methods.VeRA;

/// <summary>
/// A model with VeRA adapters (PEFT's <c>PeftModel</c> over a <c>VeraModel</c>): wraps targeted linear layers in
/// <see cref="VeraLinear"/> (quantizing their base to 4-bit when asked), freezes everything else, and manages named
/// adapters (add, activate, disable, delete, merge and unload) whose per-layer vectors b and d scale frozen random
/// projections that every adapter of the model shares (<see cref="VeraProjections"/>).
/// </summary>
public sealed class VeraModel<TModel> : AdaptedModel<TModel, VeraLinear, VeraConfig> where TModel : Module
{
    private VeraModel(TModel model, QuantizationConfig? quantization, ulong seed) : base(model, quantization, seed)
    {
    }

    /// <summary>The VeRA projections shared by every adapter of this model.</summary>
    public VeraProjections? VeraProjections { get; private set; }

    /// <summary>Adapted layers by path.</summary>
    public IEnumerable<(string Path, VeraLinear Layer)> VeraLayers => WrappedLayers;

    /// <summary>
    /// Adds VeRA to <paramref name="model"/>: the targeted layers get per-layer vectors b and d over projections shared
    /// by all of them (generated from <see cref="VeraConfig.ProjectionSeed"/>, sized to the widest targeted layer).
    /// With <paramref name="quantization"/> the targeted bases are stored 4-bit. The base model is frozen.
    /// </summary>
    /// <exception cref="ArgumentException">A target matches nothing or a setting is invalid.</exception>
    public static VeraModel<TModel> Create(TModel model, VeraConfig config, QuantizationConfig? quantization = null, string adapterName = "default") =>
        Create(model, config, quantization, adapterName, null);

    internal static VeraModel<TModel> Create(TModel model, VeraConfig config, QuantizationConfig? quantization, string adapterName, VeraProjections? projections)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var vera = new VeraModel<TModel>(model, quantization, (ulong)config.Seed);
        model.Freeze();
        vera.AddAdapter(adapterName, config, projections);
        return vera;
    }

    /// <summary>Adds another VeRA adapter (inactive until <see cref="AdaptedModel{TModel, TLayer, TConfig}.SetAdapter"/>); it shares the model's projections.</summary>
    /// <exception cref="ArgumentException">
    /// The name exists, the projection seed differs from the first adapter's, or the projections do not cover a targeted
    /// layer at this rank.
    /// </exception>
    public void AddAdapter(string name, VeraConfig config) => AddAdapter(name, config, null);

    internal void AddAdapter(string name, VeraConfig config, VeraProjections? loaded)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (HasAdapter(name)) throw new ArgumentException($"An adapter named '{name}' already exists.", nameof(name));
        var first = Adapters.Select(GetConfig).FirstOrDefault();
        if (first != null && first.ProjectionSeed != config.ProjectionSeed)
            throw new ArgumentException($"VeRA projection seed {config.ProjectionSeed} of adapter '{name}' differs from {first.ProjectionSeed}, the seed of the projections this model's VeRA adapters share (PEFT's projection_prng_key must match too).", nameof(config));
        if (first != null && first.SaveProjection != config.SaveProjection)
            throw new ArgumentException($"VeRA adapters of one model must all save their projections or none (adapter '{name}' has SaveProjection = {config.SaveProjection}).", nameof(config));
        var paths = ResolveTargets(config.Targets, config.Exclude, config.Layers);
        var layers = paths.Select(p => (Path: p, Layer: (LinearBase)Model.GetModule(p))).ToList();
        foreach (var (path, layer) in layers)
            if (layer is AdaptedLinear and not VeraLinear)
                throw new ArgumentException($"'{path}' already carries adapters of another method ({layer.GetType().Name}); PeftGen does not stack VeRA on them.", nameof(config));
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
        bool firstAdapter = AdapterCount == 0;
        foreach (var (path, _) in layers)
        {
            var layer = Model.GetModule(path) as VeraLinear ?? Wrap(path, baseLayer => new VeraLinear(baseLayer, DropoutRng));
            layer.AddAdapter(name, config.Rank, config.Dropout, config.DInitial, projections, path);
            if (!firstAdapter) layer.SetActiveAdapters(layer.ActiveAdapters.Where(a => a != name).ToArray());
        }
        SetConfig(name, config);
        if (firstAdapter) SetAdapter(name);
        else
            foreach (var (_, layer) in VeraLayers.Where(l => l.Layer.AdapterNames.Contains(name)))
                layer.LambdaB(name).RequiresGrad = layer.LambdaD(name).RequiresGrad = false;
    }

    /// <inheritdoc />
    private protected override void SetTrainable(VeraLinear layer, string adapter, bool active)
    {
        layer.LambdaB(adapter).RequiresGrad = active;
        layer.LambdaD(adapter).RequiresGrad = active;
        if (active) return;
        layer.LambdaB(adapter).ZeroGrad();
        layer.LambdaD(adapter).ZeroGrad();
    }

    /// <summary>VeRA's plan row: rank r, alpha and scaling 1, trainable out + r.</summary>
    private protected override AdaptedLayer PlanRow(string path, VeraLinear layer, string adapter) =>
        new(path, layer.InFeatures, layer.OutFeatures, layer.GetSettings(adapter).Rank, 1f, 1f, layer.BaseLayer is Linear4Bit,
            (long)layer.OutFeatures + layer.GetSettings(adapter).Rank);

    /// <inheritdoc />
    /// <summary>Writes the active adapter as a Hugging Face PEFT VeRA folder (<see cref="VeraAdapterFile"/>).</summary>
    /// <param name="folder">The adapter folder, created when missing.</param>
    /// <param name="baseModelNameOrPath">The config's <c>base_model_name_or_path</c>, or null.</param>
    public override void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        VeraAdapterFile.Save(this, folder, AdaptedModel.SingleActive(ActiveAdapters, "VeRA"), baseModelNameOrPath);

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) VeraProjections?.Dispose();
    }
}

/// <summary>Entry points that infer the model type.</summary>
public static class VeraModel
{
    /// <summary>Adds VeRA (over a 4-bit base with <paramref name="quantization"/>) to <paramref name="model"/>; see <see cref="VeraModel{TModel}.Create(TModel, VeraConfig, QuantizationConfig?, string)"/>.</summary>
    public static VeraModel<TModel> Create<TModel>(TModel model, VeraConfig config, QuantizationConfig? quantization = null, string adapterName = "default")
        where TModel : Module => VeraModel<TModel>.Create(model, config, quantization, adapterName);
}
