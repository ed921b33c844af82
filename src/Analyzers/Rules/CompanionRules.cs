using System.Collections.Generic;
using System.Linq;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;
using static PeftGen.Analyzers.CheckContext;

namespace PeftGen.Analyzers;

/// <summary>
/// The companions' settings, as the runtime would check them: [Quantize]'s block size (PEFT009, PEFT010), [ModelConfig]'s
/// file (PEFT015, PEFT016), [LayerDrop] and [LayerwiseLearningRate] (PEFT022, PEFT026). [DeltaLoRA] is LoRA's, checked
/// with it.
/// </summary>
internal static class CompanionRules
{
    // QuantizedWeight.MinBlockSize and MaxBlockSize: the analyzers cannot reference the runtime.
    private const int MinBlockSize = 32;
    private const int MaxBlockSize = 4096;

    public static void Check(CheckContext context)
    {
        var declaration = context.Declaration;
        var companions = declaration.Companions;
        if (declaration.Companion(Companion.Quantize) is { } quantize && companions.Quantize is { } q) CheckQuantize(context, context.Arguments(quantize), q.BlockSize);
        if (declaration.Companion(Companion.ModelConfig) is { } config && companions.ModelConfigPath is { } path) CheckModelConfig(context, context.Arguments(config), path);
        // Without a method, PEFT011 says what to do with the training companions.
        if (declaration.Method == null) return;
        if (declaration.Companion(Companion.LayerDrop) is { } layerDrop && companions.LayerDrop is { } drop)
        {
            var arguments = context.Arguments(layerDrop);
            if (!(drop.Probability >= 0 && drop.Probability < 1))
                context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("probability")), "Layer drop probability", Number(drop.Probability), "use a probability in [0, 1) (0.1 is typical); 1 would skip every layer");
            if (!declaration.IsLlama)
                context.Report(DiagnosticCatalog.MethodNeedsLlama, arguments.Location, "LayerDrop", context.Type.Name);
        }
        if (declaration.Companion(Companion.LayerwiseLearningRate) is { } layerwise && companions.LayerwiseDecay is { } decay && !(decay > 0 && decay <= 1))
        {
            var arguments = context.Arguments(layerwise);
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("decay")), "Layer-wise learning-rate decay", Number(decay), "use a decay γ in (0, 1] (0.8 to 0.95 is typical; 1 disables it)");
        }
    }

    /// <summary>The block size must be one <c>QuantizedWeight</c> accepts, and should divide every quantized layer's weight count so no block is partial.</summary>
    private static void CheckQuantize(CheckContext context, AttributeArguments arguments, int blockSize)
    {
        var at = arguments.At(arguments.Named("BlockSize"));
        if (blockSize < MinBlockSize || blockSize > MaxBlockSize || (blockSize & (blockSize - 1)) != 0)
        {
            context.Report(DiagnosticCatalog.InvalidBlockSize, at, Number(blockSize));
            return;
        }
        var partial = context.Model.Plan?.Method.QuantizedLayers.FirstOrDefault(r => (long)r.InFeatures * r.OutFeatures % blockSize != 0);
        if (partial is { } layer)
            context.Report(DiagnosticCatalog.BlockSizeDoesNotDivide, at, Number(blockSize), Number((long)layer.InFeatures * layer.OutFeatures), layer.Path);
    }

    /// <summary>The named file must be an additional file that reads as a config.json with the fields the model's shapes need.</summary>
    private static void CheckModelConfig(CheckContext context, AttributeArguments arguments, string path)
    {
        var at = arguments.At(arguments.Constructor("path"));
        // The generator's rule (ModelPlanner.FindConfig): the file whose path equals the given one or ends with "/" + it.
        var matches = ModelPlanner.Matching(path, context.Compilation.JsonFiles(), f => f.Path);
        if (matches.Count == 0)
        {
            context.Report(DiagnosticCatalog.ModelConfigNotFound, at, path);
            return;
        }
        if (matches.Count > 1)
        {
            context.Report(DiagnosticCatalog.InvalidModelConfig, at, path,
                "it matches " + matches.Count + " additional files (" + string.Join(", ", matches.Select(m => m.Path)) + "); give enough of the path to name one");
            return;
        }

        var file = matches[0];
        if (ModelConfigReader.Read(file.Path, file.GetText(context.CancellationToken)?.ToString()) is not { } config)
        {
            context.Report(DiagnosticCatalog.InvalidModelConfig, at, file.Path, "it is not a JSON object; pass the model's Hugging Face config.json");
            return;
        }
        if (context.Model.Tree is not { } tree) return;
        var missing = MissingFields(tree.Layers, config);
        if (missing.Count > 0)
        {
            context.Report(DiagnosticCatalog.InvalidModelConfig, at, file.Path,
                "it has no positive integer " + string.Join(", ", missing) + ", which the shapes of '" + context.Type.Name + "' need; add the field from the model's config.json");
        }
    }

    /// <summary>The config.json fields the model's config-sized layers read that the file lacks, in a stable order.</summary>
    private static List<string> MissingFields(IEnumerable<LayerSpec> layers, ModelConfigSpec config)
    {
        var needed = new SortedSet<ConfigDimension>();
        foreach (var layer in layers)
        {
            if (layer.Presence == LayerPresence.UnlessTiedEmbeddings && config.TieWordEmbeddings) continue;
            needed.Add(layer.InFeatures.FromConfig);
            needed.Add(layer.OutFeatures.FromConfig);
            foreach (var count in layer.ListCounts) needed.Add(count.FromConfig);
        }
        var missing = new List<string>();
        foreach (var dimension in needed)
        {
            switch (dimension)
            {
                case ConfigDimension.HiddenSize: Require(config.HiddenSize, "hidden_size"); break;
                case ConfigDimension.IntermediateSize: Require(config.IntermediateSize, "intermediate_size"); break;
                case ConfigDimension.QueryWidth:
                case ConfigDimension.KeyValueWidth:
                    Require(config.NumAttentionHeads, "num_attention_heads");
                    // The head size is head_dim, or hidden_size / num_attention_heads without it.
                    Require(config.HeadDim ?? config.HiddenSize, "hidden_size");
                    break;
                case ConfigDimension.VocabSize: Require(config.VocabSize, "vocab_size"); break;
                case ConfigDimension.NumHiddenLayers: Require(config.NumHiddenLayers, "num_hidden_layers"); break;
            }
        }
        return missing;

        void Require(int? value, string field)
        {
            if (value == null && !missing.Contains(field)) missing.Add(field);
        }
    }
}
