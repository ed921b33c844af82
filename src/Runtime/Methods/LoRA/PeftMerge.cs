using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>What <see cref="PeftMerge.MergeToFolder"/> wrote.</summary>
/// <param name="Config">The base model's configuration, which the merged folder keeps.</param>
/// <param name="AdaptedLayers">Paths of the layers the adapter changed, in model order.</param>
public sealed record MergedModel(LlamaConfig Config, IReadOnlyList<string> AdaptedLayers);

/// <summary>
/// Merges a LoRA adapter folder (LoRA, rsLoRA, DoRA: PEFT's format, see <see cref="PeftAdapterFile"/>) into a Llama base
/// model on disk and writes the merged Hugging Face folder, streaming tensor by tensor: each base tensor is read alone
/// (from a Hugging Face folder, single or sharded, or a llama2.c checkpoint), merged with its adapter factors when its
/// layer is adapted, rounded to the storage dtype, written and released before the next is read. Peak memory is the
/// adapter plus a few copies of the largest tensor (the merge itself holds the base weight, the merged weight and
/// s·B·A of one layer), whatever the model's size. The bytes written are those of
/// <see cref="PeftAdapterFile.LoadInto"/> + <see cref="AdaptedModel{TModel, TLayer, TConfig}.MergeAndUnload"/> + <see cref="HuggingFaceLlama.Save"/>:
/// the merge runs through the same <see cref="LoRALinear.EffectiveWeight"/>, one temporary layer at a time.
/// </summary>
public static class PeftMerge
{
    private const string AdapterName = "default";
    private const string WeightSuffix = ".weight";

    /// <summary>
    /// Merges the adapter in <paramref name="adapterFolder"/> into the base model at <paramref name="baseModelPath"/>
    /// (a Hugging Face folder or a llama2.c checkpoint) and writes <c>config.json</c> and <c>model.safetensors</c> into
    /// <paramref name="outputFolder"/> (created when missing), the weights stored as <paramref name="storeAs"/>. The base,
    /// the adapter and their fit are checked before anything is written, as loading checks them; a failure later (a base
    /// file cut short, a merged weight that is NaN or infinite, a cancellation) deletes what was being written and leaves
    /// the folder's previous files as they were.
    /// </summary>
    /// <exception cref="ArgumentException">The output folder is the base model's folder.</exception>
    /// <exception cref="FileNotFoundException">The base model or the adapter is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed, the adapter does not fit the base, or a merged weight is not finite.</exception>
    /// <exception cref="SafetensorsFormatException">A safetensors file breaks the format or was cut short.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> was cancelled.</exception>
    public static MergedModel MergeToFolder(string baseModelPath, string adapterFolder, string outputFolder, DType storeAs = DType.Float32,
        CancellationToken cancellation = default) =>
        Merge(baseModelPath, adapterFolder, outputFolder, storeAs, cancellation, written: null);

    /// <summary>As the public overload; <paramref name="written"/> is told each tensor's name once it is written (tests interrupt the stream with it).</summary>
    internal static MergedModel Merge(string baseModelPath, string adapterFolder, string outputFolder, DType storeAs,
        CancellationToken cancellation, Action<string>? written)
    {
        ArgumentNullException.ThrowIfNull(baseModelPath);
        ArgumentNullException.ThrowIfNull(adapterFolder);
        ArgumentNullException.ThrowIfNull(outputFolder);
        PathIdentity.EnsureOutputSeparate(nameof(outputFolder), outputFolder, [("the base model", baseModelPath), ("the adapter", adapterFolder)],
            [HuggingFaceLlama.ConfigFileName, HuggingFaceLlama.WeightsFileName]);

        using var weights = CheckpointReader.Open(baseModelPath);
        var shapes = HuggingFaceLlama.ExpectedShapes(weights.Config);
        var linears = HuggingFaceLlama.LinearLayers(weights.Config).ToList();

        // The checks of PeftAdapterFile.LoadInto, in its order: the config, the keys and shapes, then what adding the adapter checks.
        string configPath = Path.Combine(adapterFolder, PeftAdapterFile.ConfigFileName);
        var config = PeftAdapterFile.ReadConfig(configPath);
        using var file = AdapterFolder.OpenWeights(adapterFolder, RopeOrder.For(weights.Config), PeftAdapterFile.OutputRows); // q/k rows in the model's order
        var biases = PeftAdapterFile.CheckKeys(file, PeftAdapterFile.ExpectedKeys(config, linears),
            path => shapes.TryGetValue(path, out var shape) ? shape : null).ToHashSet(StringComparer.Ordinal);
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        AdapterFolder.AddFromConfig(configPath, () =>
        {
            config.Validate();
            foreach (var path in PeftModel.ResolveTargets(config, [.. linears.Select(l => l.Path)]))
            {
                // What wrapping the layer finds: LlamaForCausalLM lets adapters replace its decoder layers' projections only.
                if (!path.StartsWith("model.layers.", StringComparison.Ordinal))
                    throw new ArgumentException($"{nameof(LlamaForCausalLM)}.{path} cannot be replaced.");
                var layer = linears.First(l => l.Path == path);
                ranks.Add(path, PeftModel.RankWithin(config, path, layer.In, layer.Out));
            }
        });

        HuggingFaceLlama.WriteFolder(outputFolder, weights.Config, storeAs, shapes, name =>
        {
            string key = AdapterFolder.Key(name);
            if (biases.Contains(key)) return (file.ReadTensor(key), true);
            string path = name.EndsWith(WeightSuffix, StringComparison.Ordinal) ? name[..^WeightSuffix.Length] : name;
            return ranks.TryGetValue(path, out int rank)
                ? (MergedWeight(weights, name, file, config, path, rank, storeAs), true)
                : (weights.ReadFloat32(name), true);
        }, written, cancellation);
        return new MergedModel(weights.Config, [.. linears.Select(l => l.Path).Where(ranks.ContainsKey)]);
    }

    /// <summary>
    /// The weight <see cref="AdaptedModel{TModel, TLayer, TConfig}.MergeAndUnload"/>(<paramref name="storeAs"/>) leaves in layer
    /// <paramref name="path"/>: a temporary <see cref="LoRALinear"/> over the base weight with the file's factors, its
    /// <see cref="LoRALinear.EffectiveWeight"/> rounded to the storage dtype. Refuses a result that is not finite.
    /// </summary>
    private static Tensor MergedWeight(CheckpointReader weights, string name, SafetensorsFile file, LoRAConfig config, string path, int rank, DType storeAs)
    {
        var shape = weights.ShapeOf(name);
        using var layer = new LoRALinear(new Linear(shape[1], shape[0]), new Rng(0));
        weights.Read(name, 0, ((Linear)layer.BaseLayer).Weight.AsSpan());
        using (var a = file.ReadTensor(AdapterFolder.Key(path, PeftAdapterFile.SuffixA)))
        using (var b = file.ReadTensor(AdapterFolder.Key(path, PeftAdapterFile.SuffixB)))
        using (var magnitude = config.UseDoRA ? file.ReadTensor(AdapterFolder.Key(path, PeftAdapterFile.SuffixMagnitude)) : null)
            layer.AddAdapterFromFactors(AdapterName, a, b, AdapterSettings.For(config, rank, config.AlphaFor(path)), magnitude);
        layer.SetActiveAdapters(AdapterName);
        var merged = layer.EffectiveWeight();
        try
        {
            AdaptedModel.RoundToStorage(merged, storeAs);
            var values = merged.AsSpan();
            for (int i = 0; i < values.Length; i++)
            {
                if (float.IsFinite(values[i])) continue;
                int columns = shape[1];
                throw new InvalidDataException(
                    $"{file.FilePath}: merging the adapter into '{path}' gives a non-finite weight ({values[i]} at row {i / columns}, column {i % columns}" +
                    $"{(storeAs == DType.Float32 ? "" : $" in {storeAs}")}): the adapter or the base holds NaN or infinite values, or the merged weight overflows the storage dtype; no output was written.");
            }
            return merged;
        }
        catch
        {
            merged.Dispose();
            throw;
        }
    }
}
