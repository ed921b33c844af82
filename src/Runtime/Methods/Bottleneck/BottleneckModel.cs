using System.Globalization;
using System.Text;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.Bottleneck;

/// <summary>One bottleneck adapter as placed: where, its widths and trainable parameters.</summary>
/// <param name="Path">Module path of the adapter, e.g. model.layers.0.attn_adapter.</param>
/// <param name="HiddenSize">The model width d.</param>
/// <param name="BottleneckSize">The bottleneck width m.</param>
/// <param name="TrainableParameters">2·d·m + d + m with biases, 2·d·m without.</param>
public sealed record BottleneckSite(string Path, int HiddenSize, int BottleneckSize, long TrainableParameters);

/// <summary>
/// A Llama-family model with bottleneck adapters (Houlsby et al. 2019) after the attention and/or MLP block of its
/// decoder layers. The whole base model is frozen; only the adapters train. Adapters live at
/// <c>&lt;layer&gt;.attn_adapter</c> and <c>&lt;layer&gt;.mlp_adapter</c>, so parameter paths look like
/// <c>model.layers.0.attn_adapter.adapter_down.weight</c>.
/// </summary>
public sealed class BottleneckModel<TModel> : IAdaptedModel where TModel : Module
{
    private BottleneckModel(TModel model, BottleneckConfig config, int bottleneckSize)
    {
        Model = model;
        Config = config;
        BottleneckSize = bottleneckSize;
    }

    /// <summary>The model, its decoder layers now holding adapters.</summary>
    public TModel Model { get; }

    /// <summary>The configuration the adapters were created with.</summary>
    public BottleneckConfig Config { get; }

    /// <summary>The bottleneck width m every adapter has.</summary>
    public int BottleneckSize { get; }

    /// <summary>The adapters by module path, in layer order (attention before MLP).</summary>
    public IEnumerable<(string Path, BottleneckAdapter Adapter)> Adapters =>
        Model.NamedModules().Where(m => m.Module is BottleneckAdapter).Select(m => (m.Path, (BottleneckAdapter)m.Module));

    /// <summary>
    /// Inserts bottleneck adapters into every decoder layer of <paramref name="model"/> (or those in
    /// <see cref="BottleneckConfig.Layers"/>) and freezes everything else. Nothing changes when a setting is invalid.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// A setting is invalid (size 0 or wider than the model, an unknown layer index), the model has no Llama decoder
    /// layers, or a layer already holds an adapter.
    /// </exception>
    public static BottleneckModel<TModel> Create(TModel model, BottleneckConfig config)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var layers = DecoderLayers(model);
        if (layers.Count == 0)
            throw new ArgumentException($"{model.GetType().Name} has no Llama decoder layers (LlamaDecoderLayer) to put bottleneck adapters in.", nameof(model));
        int hidden = layers[0].Layer.InputLayerNorm.Weight.Size(0);
        int size = config.SizeFor(hidden);
        foreach (int index in config.Layers ?? [])
            if (index >= layers.Count)
                throw new ArgumentException($"Bottleneck layer index {index} does not exist: the model has {layers.Count} decoder layers (0..{layers.Count - 1}).", nameof(config));
        var selected = layers.Where((_, i) => config.Layers == null || config.Layers.Contains(i)).ToList();
        foreach (var (path, layer) in selected)
            if (layer.AttentionAdapter != null || layer.MlpAdapter != null)
                throw new ArgumentException($"Decoder layer '{path}' already holds an adapter after its attention or MLP block; unload it first.", nameof(model));

        model.Freeze();
        var initRng = new Rng((ulong)(uint)config.Seed * 0x9E37_79B9UL + 0xB0_771E);
        foreach (var (_, layer) in selected)
        {
            if (config.AdaptsAttention) layer.SetAttentionAdapter(new BottleneckAdapter(hidden, size, config.Activation, config.Bias, initRng));
            if (config.AdaptsMlp) layer.SetMlpAdapter(new BottleneckAdapter(hidden, size, config.Activation, config.Bias, initRng));
        }
        return new BottleneckModel<TModel>(model, config, size);
    }

    /// <summary>Runs the base model without adapters until the returned scope is disposed.</summary>
    public IDisposable DisableAdapters()
    {
        var adapters = Adapters.Select(a => a.Adapter).ToList();
        foreach (var adapter in adapters) adapter.Disabled = true;
        return new Restore(() =>
        {
            foreach (var adapter in adapters) adapter.Disabled = false;
        });
    }

    /// <summary>Removes every adapter and returns the base model (its parameters stay frozen).</summary>
    public TModel Unload()
    {
        foreach (var (_, layer) in DecoderLayers(Model))
        {
            layer.SetAttentionAdapter(null)?.Dispose();
            layer.SetMlpAdapter(null)?.Dispose();
        }
        return Model;
    }

    /// <summary>Parameters that train (the adapters').</summary>
    public IEnumerable<Tensor> TrainableParameters() => Model.TrainableParameters();

    /// <summary>The adapters with their widths and parameter counts.</summary>
    public IReadOnlyList<BottleneckSite> Plan() =>
        Adapters.Select(a => new BottleneckSite(a.Path, a.Adapter.HiddenSize, a.Adapter.BottleneckSize, a.Adapter.ParameterCount)).ToList();

    /// <summary>PEFT's print_trainable_parameters line: "trainable params: … || all params: … || trainable%: …".</summary>
    public string TrainableParametersSummary()
    {
        var (trainable, total) = Model.CountParameters();
        return string.Create(CultureInfo.InvariantCulture,
            $"trainable params: {trainable:N0} || all params: {total:N0} || trainable%: {100.0 * trainable / Math.Max(1, total):F4}");
    }

    /// <summary>A table of the adapters, one line each.</summary>
    public string DescribePlan()
    {
        var sb = new StringBuilder();
        foreach (var s in Plan())
            sb.Append(CultureInfo.InvariantCulture, $"{s.Path,-36} d={s.HiddenSize} m={s.BottleneckSize} {Config.Activation}  +{s.TrainableParameters:N0}").AppendLine();
        return sb.ToString();
    }

    /// <summary>Disposes the model.</summary>
    public void Dispose() => Model.Dispose();

    // ---- IAdaptedModel: how the trainer trains and saves it --------------------------------------------------------------

    /// <inheritdoc />
    Module IAdaptedModel.TrainedModule => Model;

    /// <summary>The model as a Llama-family causal LM (adapters active), or null when it is another module.</summary>
    public LlamaForCausalLM? CausalLM => Model as LlamaForCausalLM;

    /// <summary>Bottleneck adapters draw nothing at random; the layer drop's generator when one is installed on the model.</summary>
    public IReadOnlyList<Rng> RandomGenerators => AdaptedModel.Generators(Model);

    /// <summary>Bottleneck adapters train with the optimizer alone.</summary>
    public TrainingHooks PrepareTraining() => TrainingHooks.None;

    /// <summary>Writes the adapters in PeftGen's PEFT-style format (<see cref="BottleneckAdapterFile"/>).</summary>
    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) => BottleneckAdapterFile.Save(this, folder, baseModelNameOrPath);

    internal static List<(string Path, LlamaDecoderLayer Layer)> DecoderLayers(Module model) =>
        model.NamedModules().Where(m => m.Module is LlamaDecoderLayer).Select(m => (m.Path, (LlamaDecoderLayer)m.Module)).ToList();
}

/// <summary>Entry points that infer the model type.</summary>
public static class BottleneckModel
{
    /// <summary>Adds bottleneck adapters to <paramref name="model"/>; see <see cref="BottleneckModel{TModel}.Create"/>.</summary>
    public static BottleneckModel<TModel> Create<TModel>(TModel model, BottleneckConfig config) where TModel : Module =>
        BottleneckModel<TModel>.Create(model, config);
}
