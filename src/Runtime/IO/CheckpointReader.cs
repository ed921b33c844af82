using System.Runtime.InteropServices;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// A model checkpoint read one tensor, or one piece of a tensor, at a time, with tensors named by the model's parameter
/// paths: a Hugging Face folder (<c>config.json</c> + safetensors, sharded or not) or a llama2.c checkpoint. Reads go
/// through the file, never a memory map, so what was read does not stay in the process's resident set: this is what lets
/// <see cref="ModelLoader"/> build a 4-bit model from a checkpoint many times its size.
/// </summary>
internal abstract class CheckpointReader : IDisposable
{
    /// <summary>The file or folder, for messages.</summary>
    public abstract string Source { get; }

    /// <summary>The model configuration the checkpoint was checked against.</summary>
    public abstract LlamaConfig Config { get; }

    /// <summary>True when the checkpoint holds <paramref name="name"/>.</summary>
    public abstract bool Contains(string name);

    /// <summary>The shape of tensor <paramref name="name"/>.</summary>
    public abstract int[] ShapeOf(string name);

    /// <summary>The type tensor <paramref name="name"/> is stored in (float32, bfloat16 or float16).</summary>
    public abstract DType StoredType(string name);

    /// <summary>Elements [first, first + destination.Length) of the flattened tensor, as float32.</summary>
    public abstract void Read(string name, long first, Span<float> destination);

    /// <summary>The whole tensor in its stored type, byte for byte.</summary>
    public abstract void ReadStored(string name, Span<byte> destination);

    /// <summary>Tensor <paramref name="name"/> as a new float32 tensor (not scope-owned; the caller disposes it).</summary>
    public Tensor ReadFloat32(string name)
    {
        var tensor = Tensor.Create(ShapeOf(name), DType.Float32, zeroed: false, scoped: false);
        try
        {
            Read(name, 0, tensor.AsSpan());
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>Closes the files.</summary>
    public abstract void Dispose();

    /// <summary>Opens a Hugging Face model folder or a llama2.c checkpoint, checking every tensor name and shape against the configuration.</summary>
    /// <exception cref="FileNotFoundException">Nothing is at <paramref name="modelPath"/>, or the folder lacks its config or weights.</exception>
    /// <exception cref="InvalidDataException">The files are malformed or disagree with the configuration (the message names the file).</exception>
    public static CheckpointReader Open(string modelPath)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        if (Directory.Exists(modelPath)) return SafetensorsCheckpoint.Open(modelPath);
        if (!File.Exists(modelPath))
            throw new FileNotFoundException(
                $"Model '{modelPath}' does not exist: pass a Hugging Face model folder (config.json + model.safetensors) or a llama2.c checkpoint (.bin).", modelPath);
        if (modelPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || modelPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"Model '{modelPath}' is a file of a Hugging Face model folder: pass the folder ({Path.GetDirectoryName(Path.GetFullPath(modelPath))}).");
        return Llama2CheckpointReader.Open(modelPath);
    }
}

/// <summary>A Hugging Face Llama folder: <c>config.json</c> and one safetensors file or shards listed in an index.</summary>
internal sealed class SafetensorsCheckpoint : CheckpointReader
{
    private readonly SafetensorsFile? _file;
    private readonly SafetensorsIndex? _index;

    private SafetensorsCheckpoint(LlamaConfig config, SafetensorsFile? file, SafetensorsIndex? index)
    {
        Config = config;
        _file = file;
        _index = index;
    }

    public override string Source => _file?.FilePath ?? _index!.FilePath;

    public override LlamaConfig Config { get; }

    public static new SafetensorsCheckpoint Open(string folder)
    {
        string configPath = Path.Combine(folder, HuggingFaceLlama.ConfigFileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"No {HuggingFaceLlama.ConfigFileName} in {folder}.", configPath);
        var config = LlamaConfig.Load(configPath) with { RopeInterleaved = false };
        string single = Path.Combine(folder, HuggingFaceLlama.WeightsFileName), index = Path.Combine(folder, HuggingFaceLlama.IndexFileName);
        var reader = File.Exists(single) ? new SafetensorsCheckpoint(config, SafetensorsFile.Open(single), null)
            : File.Exists(index) ? new SafetensorsCheckpoint(config, null, SafetensorsIndex.Open(index))
            : throw new FileNotFoundException($"No {HuggingFaceLlama.WeightsFileName} or {HuggingFaceLlama.IndexFileName} in {folder}.", single);
        try
        {
            // Every name and shape is checked against the config before anything is allocated, so a config that
            // disagrees with its weights (or a doctored one) is reported instead of allocating whatever it asks for.
            var names = reader._file?.TensorNames ?? reader._index!.TensorNames;
            long stored = 0;
            foreach (var name in names)
            {
                var info = reader.Info(name);
                stored += info.End - info.Begin;
            }
            HuggingFaceLlama.CheckConfigFits(configPath, reader.Source, config, names.Count, stored);
            HuggingFaceLlama.CheckTensors(reader.Source, HuggingFaceLlama.ExpectedShapes(config),
                reader._file?.TensorNames ?? reader._index!.TensorNames, reader.Info, config.TieWordEmbeddings);
            return reader;
        }
        catch
        {
            reader.Dispose();
            throw;
        }
    }

    public override bool Contains(string name) => _file?.Contains(name) ?? _index!.Contains(name);

    public override int[] ShapeOf(string name) => Info(name).Shape;

    public override DType StoredType(string name) => Info(name).DType
        ?? throw new SafetensorsFormatException(Source, $"tensor '{name}' is stored as {Info(name).DTypeName}; weights must be F32, BF16 or F16.");

    public override void Read(string name, long first, Span<float> destination) => FileOf(name).ReadElements(name, first, destination);

    public override void ReadStored(string name, Span<byte> destination) => FileOf(name).ReadStoredBytes(name, destination);

    public override void Dispose()
    {
        _file?.Dispose();
        _index?.Dispose();
    }

    private SafetensorsTensorInfo Info(string name) => _file?.GetInfo(name) ?? _index!.GetInfo(name);

    private SafetensorsFile FileOf(string name) => _file ?? _index!.ShardOf(name);
}

/// <summary>
/// A llama2.c checkpoint (the "version 0" format of <c>run.c</c>): float32 weights in a fixed order after a seven-int32
/// header, each kind of weight for all layers together. Tensors are named as the model's parameters.
/// </summary>
internal sealed class Llama2CheckpointReader : CheckpointReader
{
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle;
    private readonly Dictionary<string, (long Offset, int[] Shape)> _tensors;

    private Llama2CheckpointReader(string path, LlamaConfig config, Microsoft.Win32.SafeHandles.SafeFileHandle handle, Dictionary<string, (long, int[])> tensors)
    {
        Source = path;
        Config = config;
        _handle = handle;
        _tensors = tensors;
    }

    public override string Source { get; }

    public override LlamaConfig Config { get; }

    public static new Llama2CheckpointReader Open(string path)
    {
        var (config, sharedClassifier) = Llama2Checkpoint.ReadHeader(path, out long fileLength);
        int dim = config.HiddenSize, hidden = config.IntermediateSize, layers = config.NumHiddenLayers, vocab = config.VocabSize;
        int q = config.NumAttentionHeads * config.HeadDim, kv = config.KeyValueHeads * config.HeadDim;
        // The file's length bounds the sizes: check it before building the per-layer table a huge header would blow up.
        double needed = Llama2Checkpoint.HeaderBytes + sizeof(float) * (HuggingFaceLlama.ParameterCount(config with { TieWordEmbeddings = sharedClassifier })
            + (double)config.MaxPositionEmbeddings * config.HeadDim);
        if (needed > fileLength)
            throw new InvalidDataException(
                $"{path}: truncated llama2.c checkpoint or wrong header: the header (dim {dim}, hidden {hidden}, layers {layers}, vocab {vocab}, seq_len {config.MaxPositionEmbeddings}) needs {needed:N0} bytes, the file has {fileLength:N0}.");
        var tensors = new Dictionary<string, (long, int[])>(StringComparer.Ordinal);
        long offset = Llama2Checkpoint.HeaderBytes;
        void Add(string name, params int[] shape)
        {
            tensors[name] = (offset, shape);
            offset += ShapeUtil.Count(shape) * sizeof(float);
        }
        // llama2.c's order: embedding, then each kind for all layers (w1 = gate, w2 = down, w3 = up), final norm, two
        // unused RoPE tables of seq_len · head_size / 2 floats each, and the classifier when it is not shared.
        Add("model.embed_tokens.weight", vocab, dim);
        foreach (var (name, shape) in (ReadOnlySpan<(string, int[])>)[("input_layernorm", [dim]), ("self_attn.q_proj", [q, dim]),
                     ("self_attn.k_proj", [kv, dim]), ("self_attn.v_proj", [kv, dim]), ("self_attn.o_proj", [dim, q]),
                     ("post_attention_layernorm", [dim]), ("mlp.gate_proj", [hidden, dim]), ("mlp.down_proj", [dim, hidden]), ("mlp.up_proj", [hidden, dim])])
            for (int i = 0; i < layers; i++) Add($"model.layers.{i}.{name}.weight", shape);
        Add("model.norm.weight", dim);
        offset += (long)config.MaxPositionEmbeddings * config.HeadDim * sizeof(float);
        if (!sharedClassifier) Add("lm_head.weight", vocab, dim);
        if (fileLength < offset)
            throw new InvalidDataException(
                $"{path}: truncated llama2.c checkpoint: the header (dim {dim}, hidden {hidden}, layers {layers}, vocab {vocab}, seq_len {config.MaxPositionEmbeddings}) needs {offset:N0} bytes, the file has {fileLength:N0}.");
        return new Llama2CheckpointReader(path, config, File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read), tensors);
    }

    public override bool Contains(string name) => _tensors.ContainsKey(name);

    public override int[] ShapeOf(string name) => Entry(name).Shape;

    public override DType StoredType(string name)
    {
        Entry(name);
        return DType.Float32;
    }

    public override void Read(string name, long first, Span<float> destination)
    {
        var (offset, shape) = Entry(name);
        if (first < 0 || first + destination.Length > ShapeUtil.Count(shape))
            throw new ArgumentOutOfRangeException(nameof(first), $"{Source}: '{name}' has {ShapeUtil.Count(shape)} elements; elements {first}..{first + destination.Length - 1} do not exist.");
        ReadBytes(name, offset + first * sizeof(float), MemoryMarshal.AsBytes(destination));
    }

    public override void ReadStored(string name, Span<byte> destination)
    {
        var (offset, shape) = Entry(name);
        if (destination.Length != ShapeUtil.Count(shape) * sizeof(float))
            throw new ArgumentException($"{Source}: '{name}' holds {ShapeUtil.Count(shape) * sizeof(float)} bytes, not {destination.Length}.", nameof(destination));
        ReadBytes(name, offset, destination);
    }

    public override void Dispose() => _handle.Dispose();

    private (long Offset, int[] Shape) Entry(string name) =>
        _tensors.TryGetValue(name, out var entry) ? entry : throw new KeyNotFoundException($"{Source}: a llama2.c checkpoint has no tensor '{name}'.");

    private void ReadBytes(string name, long position, Span<byte> destination)
    {
        int read = AtomicFile.ReadAt(_handle, destination, position);
        if (read < destination.Length)
            throw new InvalidDataException($"{Source}: the file ends at byte {position + read:N0}, inside '{name}': it was cut short after it was opened.");
    }
}
