using System.Text;
using System.Text.Json.Nodes;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// Hugging Face Llama model folders: <c>config.json</c> plus <c>model.safetensors</c> (or shards listed in
/// <c>model.safetensors.index.json</c>). Tensor names are the module's parameter paths
/// (<c>model.layers.0.self_attn.q_proj.weight</c>, …); <c>lm_head.weight</c> is absent when tied. Hugging Face
/// applies RoPE by rotating halves, so loaded models use <see cref="LlamaConfig.RopeInterleaved"/> = false.
/// </summary>
public static class HuggingFaceLlama
{
    /// <summary>Name of the configuration file.</summary>
    public const string ConfigFileName = "config.json";

    /// <summary>Name of a single-file checkpoint.</summary>
    public const string WeightsFileName = "model.safetensors";

    /// <summary>Name of a sharded checkpoint's index.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>
    /// Loads a Hugging Face Llama folder into a new float32 model, reading one tensor at a time.
    /// <see cref="ModelLoader.Load(string, ModelLoadOptions?)"/> loads it with 4-bit or 16-bit weights instead.
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="InvalidDataException">The config is invalid, or tensors are missing, unexpected or mis-shaped (all listed together).</exception>
    /// <exception cref="SafetensorsFormatException">A weights file breaks the safetensors format.</exception>
    public static LlamaForCausalLM Load(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder)) throw new FileNotFoundException($"No {ConfigFileName} in {folder}.", Path.Combine(folder, ConfigFileName));
        return ModelLoader.Load(folder);
    }

    /// <summary>
    /// Writes <paramref name="model"/> as a Hugging Face folder (<c>config.json</c> and <c>model.safetensors</c> with
    /// metadata <c>{"format": "pt"}</c>), tensor by tensor through a <see cref="SafetensorsWriter"/>: both files are
    /// written in full under temporary names, then renamed into place, so a failure changes nothing in the folder. A model
    /// that rotates interleaved RoPE pairs (llama2.c, Meta) has its q_proj/k_proj rows permuted into the rotate-half order
    /// Hugging Face uses, so the saved folder computes the same function.
    /// </summary>
    /// <param name="model">The model to save (float weights; adapters merged beforehand).</param>
    /// <param name="folder">Target folder, created when missing.</param>
    /// <param name="storeAs">Storage dtype of the weights (also written as torch_dtype).</param>
    public static void Save(LlamaForCausalLM model, string folder, DType storeAs = DType.Float32)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(folder);
        var parameters = model.NamedParameters().ToDictionary(p => p.Path, p => p.Tensor, StringComparer.Ordinal);
        WriteFolder(folder, model.Config, storeAs, parameters.ToDictionary(p => p.Key, p => p.Value.ShapeArray, StringComparer.Ordinal),
            name => (parameters[name], false));
    }

    /// <summary>
    /// Converts a llama2.c checkpoint into a Hugging Face folder: the weights keep their values, and q_proj/k_proj rows
    /// are permuted (per head, element 2i → i and 2i+1 → i + head_dim/2, as Hugging Face's own Meta-to-HF conversion
    /// does) so that rotate-half RoPE computes what llama2.c's interleaved RoPE did. The checkpoint is streamed tensor by
    /// tensor (peak memory about one tensor, whatever the model's size); the result is the bytes
    /// <see cref="Save"/> writes for the loaded checkpoint.
    /// </summary>
    /// <param name="checkpointPath">The llama2.c checkpoint (.bin).</param>
    /// <param name="outputFolder">Target folder, created when missing.</param>
    /// <param name="storeAs">Storage dtype of the weights.</param>
    /// <returns>The checkpoint's configuration.</returns>
    /// <exception cref="InvalidDataException">The checkpoint is truncated or its header is inconsistent; the message names the file.</exception>
    public static LlamaConfig ConvertLlama2C(string checkpointPath, string outputFolder, DType storeAs = DType.Float32)
    {
        ArgumentNullException.ThrowIfNull(outputFolder);
        ArgumentNullException.ThrowIfNull(checkpointPath);
        if (!File.Exists(checkpointPath)) throw new FileNotFoundException($"llama2.c checkpoint not found: {checkpointPath}", checkpointPath);
        PathIdentity.EnsureOutputSeparate(nameof(outputFolder), outputFolder, [("the checkpoint", checkpointPath)], [ConfigFileName, WeightsFileName]);
        using var weights = CheckpointReader.Open(checkpointPath);
        WriteFolder(outputFolder, weights.Config, storeAs, ExpectedShapes(weights.Config), name => (weights.ReadFloat32(name), true));
        return weights.Config;
    }

    /// <summary>
    /// Writes a Llama folder tensor by tensor: <paramref name="tensorOf"/> gives each parameter (float, model order; owned
    /// ones are disposed once written) in the file's order, q/k rows are permuted for rotate-half RoPE when the config
    /// rotates interleaved pairs, and each is converted to <paramref name="storeAs"/> and written before the next is asked
    /// for. <c>model.safetensors</c> and <c>config.json</c> are written in full under temporary names and then renamed into
    /// place; any failure (including a cancellation) deletes them, leaves the folder's previous files as they were and
    /// removes the folder itself when this call created it and it is still empty. <paramref name="written"/> is told the
    /// name of each tensor once it is written.
    /// </summary>
    internal static void WriteFolder(string folder, LlamaConfig config, DType storeAs, IReadOnlyDictionary<string, int[]> shapes,
        Func<string, (Tensor Tensor, bool Owned)> tensorOf, Action<string>? written = null, CancellationToken cancellation = default)
    {
        string full = Path.GetFullPath(folder);
        bool created = !Directory.Exists(full);
        Directory.CreateDirectory(full);
        string configPath = Path.Combine(full, ConfigFileName), configTemp = AtomicFile.TempPathFor(configPath);
        try
        {
            using var writer = SafetensorsWriter.Create(Path.Combine(full, WeightsFileName),
                shapes.Select(s => SafetensorsTensorSpec.Of(s.Key, storeAs, s.Value)), new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var spec in writer.Tensors)
            {
                cancellation.ThrowIfCancellationRequested();
                var (tensor, owned) = tensorOf(spec.Name);
                try
                {
                    if (config.RopeInterleaved && IsRotaryProjection(spec.Name, out bool isKey))
                    {
                        using var halves = InterleavedToHalves(tensor, isKey ? config.KeyValueHeads : config.NumAttentionHeads, config.HeadDim);
                        writer.Write(spec.Name, halves);
                    }
                    else writer.Write(spec.Name, tensor);
                }
                finally
                {
                    if (owned) tensor.Dispose();
                }
                written?.Invoke(spec.Name);
            }
            cancellation.ThrowIfCancellationRequested();
            WriteConfig(configTemp, config, storeAs);
            writer.Commit();
            File.Move(configTemp, configPath, overwrite: true);
        }
        catch
        {
            AtomicFile.TryDelete(configTemp);
            if (created) AtomicFile.TryDeleteEmptyFolder(full);
            throw;
        }
    }

    /// <summary>Parameter names and shapes a Hugging Face Llama checkpoint with <paramref name="config"/> holds.</summary>
    public static IReadOnlyDictionary<string, int[]> ExpectedShapes(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int c = config.HiddenSize, f = config.IntermediateSize, q = config.NumAttentionHeads * config.HeadDim, kv = config.KeyValueHeads * config.HeadDim;
        var shapes = new Dictionary<string, int[]>(StringComparer.Ordinal) { ["model.embed_tokens.weight"] = [config.VocabSize, c] };
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            shapes[p + "self_attn.q_proj.weight"] = [q, c];
            shapes[p + "self_attn.k_proj.weight"] = [kv, c];
            shapes[p + "self_attn.v_proj.weight"] = [kv, c];
            shapes[p + "self_attn.o_proj.weight"] = [c, q];
            shapes[p + "mlp.gate_proj.weight"] = [f, c];
            shapes[p + "mlp.up_proj.weight"] = [f, c];
            shapes[p + "mlp.down_proj.weight"] = [c, f];
            shapes[p + "input_layernorm.weight"] = [c];
            shapes[p + "post_attention_layernorm.weight"] = [c];
        }
        shapes["model.norm.weight"] = [c];
        if (!config.TieWordEmbeddings) shapes["lm_head.weight"] = [config.VocabSize, c];
        return shapes;
    }

    /// <summary>Most names a mismatch message lists of each kind before "and N more".</summary>
    internal const int MaxListedNames = 10;

    /// <summary>
    /// Checks the sizes in a config against what the weights can hold, before anything per layer is built: the layer count
    /// against the number of stored tensors (a layer has 9) and the parameter count against the stored bytes (at least 2 per
    /// weight). Guards against a doctored or wrong config.json asking for billions of layers or elements.
    /// </summary>
    /// <exception cref="InvalidDataException">The config asks for more than the weights hold; the message names the fields.</exception>
    internal static void CheckConfigFits(string configSource, string weightsSource, LlamaConfig config, int tensorCount, long storedBytes)
    {
        const int TensorsPerLayer = 9;
        int extra = config.TieWordEmbeddings ? 2 : 3;
        long maxLayers = Math.Max(0, (tensorCount - extra) / TensorsPerLayer);
        if (config.NumHiddenLayers > maxLayers)
            throw new InvalidDataException(
                $"{configSource}: num_hidden_layers = {config.NumHiddenLayers}, but {weightsSource} holds only {tensorCount:N0} tensors, "
                + $"enough for at most {maxLayers:N0} layers ({TensorsPerLayer} tensors each, plus {extra}): fix num_hidden_layers or use the weights that belong to this config.");
        double bytes = ParameterCount(config) * 2; // the smallest storage dtype (F16/BF16) has 2 bytes per weight
        if (bytes > storedBytes)
            throw new InvalidDataException(
                $"{configSource}: the sizes (hidden_size {config.HiddenSize}, intermediate_size {config.IntermediateSize}, vocab_size {config.VocabSize}, "
                + $"num_hidden_layers {config.NumHiddenLayers}, num_attention_heads {config.NumAttentionHeads}) need at least {bytes:N0} bytes of weights, "
                + $"but {weightsSource} holds {storedBytes:N0}: fix config.json or use the weights that belong to it.");
    }

    /// <summary>Number of weights a Llama with <paramref name="config"/> has, computed without building any shape (as a double: it cannot overflow).</summary>
    internal static double ParameterCount(LlamaConfig config)
    {
        double c = config.HiddenSize, f = config.IntermediateSize, q = (double)config.NumAttentionHeads * config.HeadDim,
            kv = (double)config.KeyValueHeads * config.HeadDim;
        double layer = 2 * q * c + 2 * kv * c + 3 * f * c + 2 * c;
        return config.VocabSize * c * (config.TieWordEmbeddings ? 1 : 2) + c + config.NumHiddenLayers * layer;
    }

    /// <summary>Up to <see cref="MaxListedNames"/> names, then "and N more".</summary>
    internal static string ListNames(IReadOnlyCollection<string> names) =>
        string.Join(", ", names.Take(MaxListedNames)) + (names.Count > MaxListedNames ? $", and {names.Count - MaxListedNames:N0} more" : "");

    /// <summary>The linear layers of a model with <paramref name="config"/>, in checkpoint order: module path, input size, output size (the untied head included).</summary>
    internal static IEnumerable<(string Path, int In, int Out)> LinearLayers(LlamaConfig config) =>
        ExpectedShapes(config)
            .Where(s => s.Value.Length == 2 && s.Key != "model.embed_tokens.weight")
            .Select(s => (s.Key[..^".weight".Length], s.Value[1], s.Value[0]));

    internal static void CheckTensors(string source, IReadOnlyDictionary<string, int[]> expected, IReadOnlyList<string> names,
        Func<string, SafetensorsTensorInfo> info, bool tied)
    {
        var present = new HashSet<string>(names, StringComparer.Ordinal);
        var missing = expected.Keys.Where(k => !present.Contains(k)).ToList();
        // Transformers itself ignores a stored head when tied, and old checkpoints carry RoPE's inverse frequencies.
        var unexpected = names.Where(n => !expected.ContainsKey(n) && !(tied && n == "lm_head.weight")
            && !n.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)).ToList();
        var problems = new List<string>();
        foreach (var name in names)
        {
            if (!expected.TryGetValue(name, out var shape)) continue;
            var entry = info(name);
            if (!entry.Shape.AsSpan().SequenceEqual(shape))
                problems.Add($"'{name}' has shape {ShapeUtil.Format(entry.Shape)}, the config implies {ShapeUtil.Format(shape)}");
            else if (entry.DType == null)
                problems.Add($"'{name}' is stored as {entry.DTypeName}; weights must be F32, BF16 or F16");
        }
        if (missing.Count == 0 && unexpected.Count == 0 && problems.Count == 0) return;
        var message = new StringBuilder($"{source} does not match its {ConfigFileName}:");
        if (missing.Count > 0) message.Append($" missing [{ListNames(missing)}];");
        if (unexpected.Count > 0) message.Append($" unexpected [{ListNames(unexpected)}];");
        foreach (var p in problems.Take(MaxListedNames)) message.Append(' ').Append(p).Append(';');
        if (problems.Count > MaxListedNames) message.Append($" and {problems.Count - MaxListedNames:N0} more tensors with a wrong shape or dtype;");
        throw new InvalidDataException(message.ToString());
    }

    private static bool IsRotaryProjection(string name, out bool isKey)
    {
        isKey = name.EndsWith(".self_attn.k_proj.weight", StringComparison.Ordinal);
        return isKey || name.EndsWith(".self_attn.q_proj.weight", StringComparison.Ordinal);
    }

    /// <summary>
    /// Reorders the rows of a q/k weight [heads·headDim, in] from interleaved pairs (2i, 2i+1) to halves (i, i + headDim/2)
    /// within each head: rotate-half RoPE then pairs exactly the features the interleaved form paired.
    /// </summary>
    internal static Tensor InterleavedToHalves(Tensor weight, int heads, int headDim)
    {
        int rows = weight.Size(0), cols = weight.Size(1), half = headDim / 2;
        if (rows != heads * headDim)
            throw new ArgumentException($"{weight} does not have {heads} heads of {headDim} rows.", nameof(weight));
        // A dense float32 CPU weight is read in place; anything else through a float32 copy.
        bool dense = weight.DType == DType.Float32 && weight.IsContiguous && weight.Device.Type == DeviceType.Cpu;
        ReadOnlySpan<float> source = dense ? weight.AsSpan() : weight.ToArray();
        var t = Tensor.Create([rows, cols], DType.Float32, zeroed: false, scoped: false);
        var result = t.AsSpan();
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                    source.Slice((h * headDim + 2 * i + j) * cols, cols).CopyTo(result.Slice((h * headDim + j * half + i) * cols, cols));
        return t;
    }

    private static void WriteConfig(string path, LlamaConfig config, DType storeAs)
    {
        var json = JsonNode.Parse(config.ToJson())!.AsObject();
        json["architectures"] = new JsonArray("LlamaForCausalLM");
        json["torch_dtype"] = storeAs switch
        {
            DType.BFloat16 => "bfloat16",
            DType.Float16 => "float16",
            _ => "float32",
        };
        AtomicFile.WriteAllBytes(path, Encoding.UTF8.GetBytes(json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true })));
    }
}
