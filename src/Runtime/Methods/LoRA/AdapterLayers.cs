using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>
/// LoRA operations over a model's linear layers given as a typed list of (PyTorch-style path, layer), the list the
/// source generator emits as <c>LinearLayers()</c> by reading the model's members (no reflection, no path lookups).
/// Generated <c>NamedAdapterParameters</c>, <c>SaveAdapter</c> and <c>LoadAdapter</c> delegate here (through
/// <see cref="Generated.LoRAAdapterLayers"/>), so the model-specific part of the generated code is only the layer walk.
/// </summary>
internal static class AdapterLayers
{
    /// <summary>
    /// The tensors of <paramref name="adapter"/> by their in-memory paths, which are PEFT's
    /// (<c>&lt;layer path&gt;.lora_A.&lt;adapter&gt;.weight</c>): each adapted layer's A [r, in], B [out, r] and DoRA magnitude
    /// [out], in the order of <paramref name="layers"/>.
    /// </summary>
    /// <param name="layers">The model's linear layers (adapted ones are <see cref="LoRALinear"/> wrappers).</param>
    /// <param name="adapter">The adapter's name.</param>
    /// <returns>Path and tensor of every adapter tensor.</returns>
    public static IReadOnlyList<(string Path, Tensor Tensor)> NamedParameters(IEnumerable<(string Path, LinearBase Layer)> layers, string adapter) =>
        Tensors(layers, adapter, (path, suffix) => suffix == PeftAdapterFile.SuffixMagnitude
            ? path + ".lora_magnitude_vector." + adapter + ".weight"
            : path + suffix.Replace(".weight", "." + adapter + ".weight", StringComparison.Ordinal));

    /// <summary>
    /// The tensors of <paramref name="adapter"/> by Hugging Face PEFT file key (<c>base_model.model.&lt;path&gt;.lora_A.weight</c>;
    /// the adapter name is not part of a key), in the order of <paramref name="layers"/>.
    /// </summary>
    /// <param name="layers">The model's linear layers (adapted ones are <see cref="LoRALinear"/> wrappers).</param>
    /// <param name="adapter">The adapter's name.</param>
    /// <returns>File key and tensor of every adapter tensor.</returns>
    public static IReadOnlyList<(string Key, Tensor Tensor)> FileTensors(IEnumerable<(string Path, LinearBase Layer)> layers, string adapter) =>
        Tensors(layers, adapter, (path, suffix) => PeftAdapterFile.KeyPrefix + path + suffix);

    /// <summary>
    /// Loads the Hugging Face PEFT adapter in <paramref name="folder"/> onto <paramref name="model"/> as <paramref name="adapter"/>,
    /// with the folder's <c>adapter_config.json</c>: first checks that the keys and shapes of <c>adapter_model.safetensors</c> fit
    /// the layers <paramref name="linearLayers"/> lists (nothing changes when they do not), then freezes the model, wraps the
    /// adapted layers (quantizing their base per <paramref name="quantization"/>) and reads the weights through the wrapped
    /// layers. The model is owned by the result.
    /// </summary>
    /// <typeparam name="TModel">The model type.</typeparam>
    /// <param name="model">The model.</param>
    /// <param name="linearLayers">Lists the model's linear layers; called before and after the layers are wrapped.</param>
    /// <param name="quantization">4-bit storage of the adapted layers' bases (QLoRA), or null.</param>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="adapter">The name the adapter gets.</param>
    /// <returns>The adapted model.</returns>
    /// <exception cref="InvalidDataException">The config is invalid or does not fit the model, or keys and layers disagree; every mismatch is listed.</exception>
    public static PeftModel<TModel> Load<TModel>(TModel model, Func<IReadOnlyList<(string Path, LinearBase Layer)>> linearLayers,
        QuantizationConfig? quantization, string folder, string adapter) where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(linearLayers);
        ArgumentNullException.ThrowIfNull(folder);
        string configPath = Path.Combine(folder, PeftAdapterFile.ConfigFileName);
        var config = PeftAdapterFile.ReadConfig(configPath);
        var expected = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var (path, layer) in linearLayers())
        {
            if (!PeftModel.Adapts(config, path)) continue;
            int rank = PeftModel.RankFor(config, path);
            expected.Add(PeftAdapterFile.KeyPrefix + path + PeftAdapterFile.SuffixA, [rank, layer.InFeatures]);              // [r, in]
            expected.Add(PeftAdapterFile.KeyPrefix + path + PeftAdapterFile.SuffixB, [layer.OutFeatures, rank]);             // [out, r]
            if (config.UseDoRA) expected.Add(PeftAdapterFile.KeyPrefix + path + PeftAdapterFile.SuffixMagnitude, [layer.OutFeatures]); // [out]
        }
        using var weights = PeftAdapterFile.OpenWeights(model, folder, expected);
        PeftModel<TModel> peft;
        try
        {
            peft = PeftModel.Create(model, config, quantization, adapter);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException(configPath + ": " + e.Message, e);
        }
        foreach (var (key, tensor) in FileTensors(linearLayers(), adapter))
        {
            using var value = weights.ReadTensor(key);
            tensor.CopyFrom(value);
        }
        PeftAdapterFile.ReadBiases(model, weights);
        return peft;
    }

    // Every adapted layer's A, B and (DoRA) magnitude, named by `name(layer path, file-key suffix)`.
    private static List<(string, Tensor)> Tensors(IEnumerable<(string Path, LinearBase Layer)> layers, string adapter, Func<string, string, string> name)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(adapter);
        var tensors = new List<(string, Tensor)>();
        foreach (var (path, layer) in layers)
        {
            if (layer is not LoRALinear lora || !lora.AdapterNames.Contains(adapter)) continue;
            tensors.Add((name(path, PeftAdapterFile.SuffixA), lora.LoraA(adapter)));                           // [r, in]
            tensors.Add((name(path, PeftAdapterFile.SuffixB), lora.LoraB(adapter)));                           // [out, r]
            if (lora.Magnitude(adapter) is { } magnitude) tensors.Add((name(path, PeftAdapterFile.SuffixMagnitude), magnitude)); // [out]
        }
        return tensors;
    }
}
