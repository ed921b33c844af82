using System.CommandLine;
using System.Globalization;
using PeftGen.IO;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;

namespace PeftGen.Cli;

/// <summary>
/// <c>peftgen inspect</c>: describe a model folder, a PEFT adapter folder, a safetensors file or a llama2.c checkpoint
/// on stdout: a summary line, then one line per tensor (name, dtype, shape, parameters) and the totals.
/// </summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var path = new Argument<string>("path") { Description = "a Hugging Face model folder, a PEFT adapter folder, a .safetensors file or a llama2.c checkpoint (.bin)" };
        var command = new Command("inspect", "Show the tensors, shapes, dtypes and parameter counts of a model, adapter or safetensors file.") { path };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string target = parse.GetValue(path)!;
            var (summary, tensors) = Describe(target);
            var output = Console.Out;
            output.WriteLine(summary);
            int nameWidth = Math.Max(4, tensors.Count == 0 ? 4 : tensors.Max(t => t.Name.Length));
            int shapeWidth = Math.Max(5, tensors.Count == 0 ? 5 : tensors.Max(t => FormatShape(t.Shape).Length));
            output.WriteLine(Invariant($"{"name".PadRight(nameWidth)}  {"dtype",-5}  {"shape".PadRight(shapeWidth)}  {"parameters",14}"));
            foreach (var t in tensors)
                output.WriteLine(Invariant($"{t.Name.PadRight(nameWidth)}  {t.DType,-5}  {FormatShape(t.Shape).PadRight(shapeWidth)}  {CountOf(t.Shape),14:N0}"));
            long parameters = tensors.Sum(t => CountOf(t.Shape));
            var byDType = tensors.GroupBy(t => t.DType).Select(g => Invariant($"{g.Key} {g.Sum(t => CountOf(t.Shape)):N0}"));
            output.WriteLine(Invariant($"total: {tensors.Count} tensors, {parameters:N0} parameters ({string.Join(", ", byDType)})"));
            return 0;
        }));
        return command;
    }

    /// <summary>A tensor as stored: name, dtype name (F32, BF16…) and shape.</summary>
    internal readonly record struct StoredTensor(string Name, string DType, int[] Shape);

    internal static (string Summary, IReadOnlyList<StoredTensor> Tensors) Describe(string path)
    {
        if (Directory.Exists(path))
        {
            if (File.Exists(Path.Combine(path, PeftAdapterFile.ConfigFileName))) return DescribeAdapter(path);
            if (File.Exists(Path.Combine(path, HuggingFaceLlama.ConfigFileName))) return DescribeModelFolder(path);
            throw new FileNotFoundException(
                $"'{path}' holds neither {PeftAdapterFile.ConfigFileName} (a PEFT adapter) nor {HuggingFaceLlama.ConfigFileName} (a Hugging Face model).",
                Path.Combine(path, HuggingFaceLlama.ConfigFileName));
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"'{path}' does not exist.", path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            using var file = SafetensorsFile.Open(path);
            string metadata = file.Metadata.Count > 0 ? " metadata " + string.Join(", ", file.Metadata.Select(m => $"{m.Key}={m.Value}")) : "";
            return ($"{path}: safetensors file{metadata}", Read(file.TensorNames, file.GetInfo));
        }
        if (path.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase))
        {
            using var index = SafetensorsIndex.Open(path);
            return ($"{path}: sharded safetensors index ({index.Shards.Count} shards)", Read(index.TensorNames, index.GetInfo));
        }
        // Anything else is read as a llama2.c checkpoint: float32 weights in a fixed order, named as Hugging Face names them.
        var config = Training.PretrainedModel.ReadCheckedConfig(path); // checks the header against the file's length
        var tensors = HuggingFaceLlama.ExpectedShapes(config with { TieWordEmbeddings = true })
            .Select(kv => new StoredTensor(kv.Key, "F32", kv.Value)).ToList();
        if (!config.TieWordEmbeddings) tensors.Add(new StoredTensor("lm_head.weight", "F32", [config.VocabSize, config.HiddenSize]));
        return ($"{path}: llama2.c checkpoint ({Describe(config)}, RoPE on interleaved pairs)", tensors);
    }

    private static (string, IReadOnlyList<StoredTensor>) DescribeAdapter(string folder)
    {
        var config = PeftAdapterFile.ReadConfig(Path.Combine(folder, PeftAdapterFile.ConfigFileName));
        string weights = Path.Combine(folder, PeftAdapterFile.WeightsFileName);
        if (!File.Exists(weights)) throw new FileNotFoundException($"PEFT adapter folder '{folder}' has no {PeftAdapterFile.WeightsFileName}.", weights);
        using var file = SafetensorsFile.Open(weights);
        CheckAdapterRanks(Path.Combine(folder, PeftAdapterFile.ConfigFileName), config, file);
        string kind = config.UseDoRA ? "DoRA" : config.UseRsLoRA ? "rsLoRA" : "LoRA";
        return (Invariant($"{folder}: PEFT adapter ({kind} r={config.Rank} alpha={config.Alpha} scaling {config.Scaling:G4}, dropout {config.Dropout}, targets {config.Targets}, bias {config.Bias.ToString().ToLowerInvariant()})"),
            Read(file.TensorNames, file.GetInfo));
    }

    private static (string, IReadOnlyList<StoredTensor>) DescribeModelFolder(string folder)
    {
        // Checked against the weights (sizes, then every name and shape), so a doctored config is reported, not printed.
        var config = Training.PretrainedModel.ReadCheckedConfig(folder);
        string single = Path.Combine(folder, HuggingFaceLlama.WeightsFileName), index = Path.Combine(folder, HuggingFaceLlama.IndexFileName);
        string summary = $"{folder}: Hugging Face model ({Describe(config)})";
        if (File.Exists(single))
        {
            using var file = SafetensorsFile.Open(single);
            return (summary, Read(file.TensorNames, file.GetInfo));
        }
        if (File.Exists(index))
        {
            using var sharded = SafetensorsIndex.Open(index);
            return (summary, Read(sharded.TensorNames, sharded.GetInfo));
        }
        throw new FileNotFoundException($"No {HuggingFaceLlama.WeightsFileName} or {HuggingFaceLlama.IndexFileName} in {folder}.", single);
    }

    /// <summary>Checks the rank adapter_config.json gives each adapted layer (r, rank_pattern) against its stored lora_A/lora_B.</summary>
    private static void CheckAdapterRanks(string configPath, LoRAConfig config, SafetensorsFile file)
    {
        var problems = new List<string>();
        foreach (var name in file.TensorNames)
        {
            bool isA = name.EndsWith(".lora_A.weight", StringComparison.Ordinal), isB = name.EndsWith(".lora_B.weight", StringComparison.Ordinal);
            if (!(isA || isB) || !name.StartsWith("base_model.model.", StringComparison.Ordinal)) continue;
            string module = name["base_model.model.".Length..^".lora_A.weight".Length];
            int[] shape = file.GetInfo(name).Shape;
            int expected = config.RankFor(module), stored = shape.Length == 2 ? shape[isA ? 0 : 1] : -1;
            if (stored != expected)
                problems.Add(Invariant($"'{name}' {FormatShape(shape)} has rank {stored}, the config says {expected}"));
        }
        if (problems.Count > 0)
            throw new InvalidDataException(
                $"{configPath} does not match {file.FilePath}: {string.Join("; ", problems.Take(10))}{(problems.Count > 10 ? $"; and {problems.Count - 10} more" : "")}. Fix r (or rank_pattern) in the config, or use the weights that belong to it.");
    }

    private static IReadOnlyList<StoredTensor> Read(IReadOnlyList<string> names, Func<string, SafetensorsTensorInfo> info) =>
        names.Select(n => info(n)).Select(i => new StoredTensor(i.Name, i.DTypeName, i.Shape)).ToList();

    private static string Describe(LlamaConfig c) => Invariant(
        $"{c.NumHiddenLayers} layers, hidden {c.HiddenSize}, intermediate {c.IntermediateSize}, heads {c.NumAttentionHeads}/{c.KeyValueHeads} kv, vocab {c.VocabSize}, context {c.MaxPositionEmbeddings}{(c.TieWordEmbeddings ? ", tied embeddings" : "")}");

    private static string FormatShape(int[] shape) => "[" + string.Join(", ", shape) + "]";

    private static long CountOf(int[] shape) => shape.Aggregate(1L, (n, d) => n * d);

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
