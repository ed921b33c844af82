using System.Text.Json;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.Bottleneck;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Methods.IA3;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Methods.Sparse;
using PeftGen.Methods.VeRA;
using PeftGen.Models.Llama;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Text;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>The kind of adapter a folder holds, as read from its files.</summary>
internal enum AdapterKind
{
    /// <summary>peft_type LORA (LoRA, rsLoRA, DoRA, LoRA-FA, QLoRA).</summary>
    LoRA,
    /// <summary>peft_type LORA with delta_lora_base.safetensors beside it: Delta-LoRA's base change.</summary>
    DeltaLoRA,
    /// <summary>peft_type VERA.</summary>
    VeRA,
    /// <summary>peft_type IA3.</summary>
    IA3,
    /// <summary>peft_type PROMPT_TUNING, PREFIX_TUNING or P_TUNING.</summary>
    PromptLearning,
    /// <summary>peft_type BOTTLENECK (PeftGen's own).</summary>
    Bottleneck,
    /// <summary>No adapter_config.json, a sparse_delta.safetensors: sparse fine-tuning's delta.</summary>
    Sparse,
}

/// <summary>What <see cref="AdapterFolders.Detect"/> found in a folder.</summary>
/// <param name="Folder">The folder.</param>
/// <param name="Kind">The method family, which picks the runtime file class that reads it.</param>
/// <param name="PeftType">The config's peft_type (SPARSE_DELTA for a sparse delta).</param>
internal sealed record AdapterFolderInfo(string Folder, AdapterKind Kind, string PeftType)
{
    /// <summary>How the CLI names the method: LoRA, Delta-LoRA, VeRA, IA3, prompt tuning, …</summary>
    public string Description => Kind switch
    {
        AdapterKind.LoRA => "LoRA",
        AdapterKind.DeltaLoRA => "Delta-LoRA",
        AdapterKind.VeRA => "VeRA",
        AdapterKind.IA3 => "IA3",
        AdapterKind.Bottleneck => "bottleneck",
        AdapterKind.Sparse => "sparse fine-tuning",
        _ => PeftType switch { "PROMPT_TUNING" => "prompt tuning", "PREFIX_TUNING" => "prefix tuning", _ => "P-tuning" },
    };

    /// <summary>Whether the adapter changes only weights the Llama architecture has, so it can be merged into them.</summary>
    public bool CanMerge => Kind is not (AdapterKind.PromptLearning or AdapterKind.Bottleneck);

    /// <summary>Whether the adapter needs float32 base weights (it changed them): no 4-bit loading.</summary>
    public bool NeedsFloatBase => Kind is AdapterKind.DeltaLoRA or AdapterKind.Sparse;
}

/// <summary>A model loaded for inference (generate, chat, eval), with the adapter applied when one was given.</summary>
internal sealed class InferenceModel(PretrainedModel pretrained, IAdaptedModel? adapted, AdapterFolderInfo? adapter) : IDisposable
{
    /// <summary>The causal LM, adapters active.</summary>
    public LlamaForCausalLM Model => pretrained.Model;

    /// <summary>Its tokenizer.</summary>
    public ITokenizer Tokenizer => pretrained.Tokenizer;

    /// <summary>Where the tokenizer was read from.</summary>
    public string TokenizerPath => pretrained.TokenizerPath;

    /// <summary>The adapter folder applied, or null.</summary>
    public AdapterFolderInfo? Adapter => adapter;

    /// <summary>Disposes the adapted model (which disposes the base) and the base (idempotent).</summary>
    public void Dispose()
    {
        adapted?.Dispose();
        pretrained.Dispose();
    }
}

/// <summary>
/// Reads adapter folders of every method the runtime saves: which method wrote a folder (from adapter_config.json's
/// peft_type, and the files beside it), how to load the base model for it, how to apply it, and how to merge it.
/// </summary>
/// <remarks>
/// The runtime has one file class per method (<see cref="PeftAdapterFile"/>, <see cref="DeltaLoRAFile"/>,
/// <see cref="VeraAdapterFile"/>, <see cref="IA3AdapterFile"/>, <see cref="PromptLearningAdapterFile"/>,
/// <see cref="BottleneckAdapterFile"/>, <see cref="SparseDelta"/>) and no entry point names several methods, so the
/// dispatch on peft_type lives here, with the command line that needs it.
/// </remarks>
internal static class AdapterFolders
{
    /// <summary>The peft_type values PeftGen reads.</summary>
    private static readonly string[] KnownTypes = ["LORA", "VERA", "IA3", "PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", BottleneckAdapterFile.PeftType];

    /// <summary>
    /// Finds which method wrote <paramref name="folder"/>: adapter_config.json's peft_type (LORA with a
    /// delta_lora_base.safetensors beside it is Delta-LoRA), or, without a config, a sparse_delta.safetensors.
    /// </summary>
    /// <exception cref="CliError">The folder is missing, holds neither file, or names a peft_type PeftGen does not read.</exception>
    public static AdapterFolderInfo Detect(string folder, string option = "--adapter")
    {
        if (!Directory.Exists(folder))
            throw new CliError(File.Exists(folder)
                ? $"{option} {folder} is a file: give the adapter folder (with {PeftAdapterFile.ConfigFileName}), as train writes it in <output>/adapter."
                : $"{option} {folder}: no such folder (give the adapter folder train wrote, <output>/adapter).");
        string config = Path.Combine(folder, PeftAdapterFile.ConfigFileName);
        if (!File.Exists(config))
        {
            if (File.Exists(Path.Combine(folder, SparseFineTuning.DeltaFileName))) return new AdapterFolderInfo(folder, AdapterKind.Sparse, SparseDelta.FileType);
            throw new CliError($"{option} {folder}: no {PeftAdapterFile.ConfigFileName} there (nor a sparse fine-tuning {SparseFineTuning.DeltaFileName}): give a PEFT adapter folder.");
        }
        string? peftType;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(config));
            peftType = document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("peft_type", out var type) && type.ValueKind == JsonValueKind.String
                ? type.GetString()
                : null;
        }
        catch (JsonException e)
        {
            throw new CliError($"{option} {folder}: {PeftAdapterFile.ConfigFileName} is not valid JSON ({e.Message}).", e);
        }
        if (peftType == null)
            throw new CliError($"{option} {folder}: {PeftAdapterFile.ConfigFileName} has no \"peft_type\" string, so the method that wrote it is unknown.");
        var kind = peftType switch
        {
            "LORA" => File.Exists(Path.Combine(folder, DeltaLoRAFile.BaseDeltaFileName)) ? AdapterKind.DeltaLoRA : AdapterKind.LoRA,
            "VERA" => AdapterKind.VeRA,
            "IA3" => AdapterKind.IA3,
            "PROMPT_TUNING" or "PREFIX_TUNING" or "P_TUNING" => AdapterKind.PromptLearning,
            BottleneckAdapterFile.PeftType => AdapterKind.Bottleneck,
            _ => throw new CliError($"{option} {folder}: peft_type \"{peftType}\" is not a method PeftGen reads ({string.Join(", ", KnownTypes)}, or a sparse delta)."),
        };
        return new AdapterFolderInfo(folder, kind, peftType);
    }

    /// <summary>
    /// Refuses 4-bit loading for adapters that changed base weights (Delta-LoRA, sparse): their base must be float32.
    /// </summary>
    public static void CheckQuantization(AdapterFolderInfo adapter, QuantizationConfig? quantization, string quantOption = "--quant")
    {
        if (quantization != null && adapter.NeedsFloatBase)
            throw new CliError($"{quantOption} {quantization.Type.ToString().ToLowerInvariant()}: the {adapter.Description} adapter in {adapter.Folder} changed base weights, which load in float32 to take the change; give {quantOption} none.");
    }

    /// <summary>
    /// How to load the base model for <paramref name="adapter"/> (or for no adapter): LoRA and VeRA quantize the layers
    /// they adapt while reading them (as QLoRA trained them); Delta-LoRA and sparse deltas need float32 bases; the other
    /// methods leave the linear layers alone, so 4-bit storage applies to every linear layer but the head, as without an
    /// adapter. Frozen weights stay in the checkpoint's type.
    /// </summary>
    public static ModelLoadOptions LoadOptions(AdapterFolderInfo? adapter, QuantizationConfig? quantization)
    {
        if (adapter != null) CheckQuantization(adapter, quantization);
        switch (adapter?.Kind)
        {
            case AdapterKind.LoRA:
                return PeftModel.LoadOptions(PeftAdapterFile.ReadConfig(ConfigPath(adapter)), quantization);
            case AdapterKind.VeRA:
                var vera = VeraAdapterFile.ReadConfig(ConfigPath(adapter));
                return TrainMethods.LoadOptionsFor(vera, quantization);
            case AdapterKind.DeltaLoRA or AdapterKind.Sparse:
                return new ModelLoadOptions();
            default:
                return new ModelLoadOptions { Quantization = quantization, FrozenWeights = FrozenWeightStorage.AsStored };
        }
    }

    /// <summary>Applies the adapter in <paramref name="adapter"/> to <paramref name="model"/> with its method's file class; returns the adapted model (null for a sparse delta, added to the weights) and one line describing it.</summary>
    public static (IAdaptedModel? Adapted, string Description) Apply(LlamaForCausalLM model, AdapterFolderInfo adapter, QuantizationConfig? quantization)
    {
        string folder = adapter.Folder;
        switch (adapter.Kind)
        {
            case AdapterKind.LoRA:
            {
                var peft = PeftAdapterFile.LoadInto(model, folder, quantization);
                var c = peft.GetConfig("default");
                return (peft, $"LoRA{(c.UseDoRA ? " (DoRA)" : "")} r={c.Rank} alpha={c.Alpha} on {peft.Plan().Count} layers ({c.Targets})");
            }
            case AdapterKind.DeltaLoRA:
            {
                var peft = DeltaLoRAFile.LoadInto(model, folder);
                var c = peft.GetConfig("default");
                return (peft, $"Delta-LoRA r={c.Rank} alpha={c.Alpha} on {peft.Plan().Count} layers ({c.Targets}), base change added");
            }
            case AdapterKind.VeRA:
            {
                var vera = VeraAdapterFile.LoadInto(model, folder, quantization);
                var c = vera.GetConfig("default");
                return (vera, $"VeRA r={c.Rank} on {vera.Plan().Count} layers ({c.Targets})");
            }
            case AdapterKind.IA3:
            {
                var ia3 = IA3AdapterFile.LoadInto(model, folder);
                var c = ia3.GetConfig("default");
                return (ia3, $"IA3 on {ia3.Plan().Count} layers ({c.Targets}; feed-forward {c.FeedForward?.ToString() ?? "none"})");
            }
            case AdapterKind.PromptLearning:
            {
                var prompt = PromptLearningAdapterFile.LoadInto(model, folder);
                var c = prompt.GetConfig(prompt.ActiveAdapter);
                return (prompt, $"{adapter.Description}, {c.NumVirtualTokens} virtual tokens");
            }
            case AdapterKind.Bottleneck:
            {
                var bottleneck = BottleneckAdapterFile.LoadInto(model, folder);
                return (bottleneck, $"bottleneck adapters of width {bottleneck.BottleneckSize} at {bottleneck.Plan().Count} sublayers ({bottleneck.Config.Placement.ToString().ToLowerInvariant()})");
            }
            default:
            {
                var delta = SparseDelta.Load(Path.Combine(folder, SparseFineTuning.DeltaFileName));
                delta.ApplyTo(model);
                return (null, $"sparse delta of {delta.Count:N0} entries in {delta.Tensors.Count} tensors, added to the weights");
            }
        }
    }

    /// <summary>
    /// Loads a model for inference (generate, chat, eval), with the adapter in <paramref name="adapterFolder"/> when
    /// given, detected from its files. The layers that will be 4-bit are quantized while they are read and the other
    /// weights stay in the checkpoint's 16-bit type, so the float32 model is never built (Delta-LoRA and sparse deltas
    /// load a float32 base). Reports what was loaded on stderr.
    /// </summary>
    public static InferenceModel LoadForInference(string modelPath, string? tokenizerPath, Device target, string? adapterFolder, QuantizationConfig? quantization)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var adapter = adapterFolder != null ? Detect(adapterFolder) : null;
        var pretrained = PretrainedModel.Load(modelPath, tokenizerPath, target, LoadOptions(adapter, quantization));
        try
        {
            var model = pretrained.Model;
            Console.Error.WriteLine($"loaded {Path.GetFileName(Path.TrimEndingDirectorySeparator(modelPath))}: {model.CountParameters().Total:N0} parameters, {model.Config.NumHiddenLayers} layers, in {clock.ElapsedMilliseconds} ms");
            if (adapter == null) return new InferenceModel(pretrained, null, null);
            var (adapted, description) = Apply(model, adapter, quantization);
            Console.Error.WriteLine($"adapter {adapterFolder}: {description}");
            return new InferenceModel(pretrained, adapted, adapter);
        }
        catch
        {
            pretrained.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Merges the adapter into the float32 base loaded whole, for the methods <see cref="PeftMerge"/> (LoRA, streamed)
    /// does not cover: Delta-LoRA (base change, then LoRA), VeRA, IA3 and sparse deltas. Returns the adapted layers' or
    /// tensors' count; the caller writes the model.
    /// </summary>
    /// <exception cref="CliError">The method cannot be merged (prompt learning, bottleneck adapters).</exception>
    public static (LlamaForCausalLM Merged, int Changed) MergeInMemory(string modelPath, AdapterFolderInfo adapter, DType storeAs)
    {
        RequireMergeable(adapter);
        var model = ModelLoader.Load(modelPath, new ModelLoadOptions());
        try
        {
            switch (adapter.Kind)
            {
                case AdapterKind.DeltaLoRA:
                {
                    var peft = DeltaLoRAFile.LoadInto(model, adapter.Folder);
                    int count = peft.Plan().Count;
                    return (peft.MergeAndUnload(storeAs), count);
                }
                case AdapterKind.VeRA:
                {
                    var vera = VeraAdapterFile.LoadInto(model, adapter.Folder);
                    int count = vera.Plan().Count;
                    var merged = vera.MergeAndUnload(storeAs);
                    vera.VeraProjections?.Dispose();
                    return (merged, count);
                }
                case AdapterKind.IA3:
                {
                    var ia3 = IA3AdapterFile.LoadInto(model, adapter.Folder);
                    int count = ia3.Plan().Count;
                    return (ia3.MergeAndUnload(), count);
                }
                case AdapterKind.Sparse:
                {
                    var delta = SparseDelta.Load(Path.Combine(adapter.Folder, SparseFineTuning.DeltaFileName));
                    delta.ApplyTo(model);
                    return (model, delta.Tensors.Count);
                }
                default:
                    throw new InvalidOperationException($"{adapter.Kind} adapters merge through PeftMerge.");
            }
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Refuses adapters that add something the Llama architecture has no weight for.</summary>
    public static void RequireMergeable(AdapterFolderInfo adapter)
    {
        if (adapter.CanMerge) return;
        throw new CliError(adapter.Kind == AdapterKind.PromptLearning
            ? $"--adapter {adapter.Folder} is a {adapter.PeftType} adapter: its virtual tokens are not weights of the model, so it cannot be merged into it. Use it with generate, chat or eval --adapter."
            : $"--adapter {adapter.Folder} is a bottleneck adapter: it adds layers that a Llama model folder has no place for, so it cannot be merged. Use it with generate, chat or eval --adapter.");
    }

    private static string ConfigPath(AdapterFolderInfo adapter) => Path.Combine(adapter.Folder, PeftAdapterFile.ConfigFileName);
}
