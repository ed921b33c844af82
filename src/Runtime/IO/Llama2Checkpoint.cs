using System.Runtime.InteropServices;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// Reads llama2.c checkpoints (the legacy "version 0" format of <c>run.c</c>): a header of seven int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab size marks an
/// unshared classifier) followed by float32 weights in a fixed order.
/// </summary>
public static class Llama2Checkpoint
{
    private const int HeaderBytes = 7 * sizeof(int);

    /// <summary>Reads only the header and returns the model configuration it describes.</summary>
    public static LlamaConfig ReadConfig(string path)
    {
        using var stream = OpenRead(path);
        return ReadHeader(stream, path).Config;
    }

    /// <summary>Loads a checkpoint into a new <see cref="LlamaForCausalLM"/> (RoPE on interleaved pairs, as llama2.c).</summary>
    /// <exception cref="InvalidDataException">The file is truncated or its header is inconsistent; the message names the file.</exception>
    public static LlamaForCausalLM Load(string path)
    {
        using var weights = Open(path);
        return weights.LoadModel();
    }

    /// <summary>
    /// Opens a checkpoint to read one tensor at a time (by its Hugging Face parameter name, in the model's interleaved
    /// q/k order): the header is validated and the file length checked against it, nothing else is read.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is truncated or its header is inconsistent; the message names the file.</exception>
    internal static LlamaWeightsReader Open(string path)
    {
        var stream = OpenRead(path);
        try
        {
            var (config, sharedClassifier) = ReadHeader(stream, path);
            var (offsets, expected) = Layout(config, sharedClassifier);
            if (stream.Length < expected)
                throw new InvalidDataException(
                    $"{path}: truncated llama2.c checkpoint: the header (dim {config.HiddenSize}, hidden {config.IntermediateSize}, layers {config.NumHiddenLayers}, vocab {config.VocabSize}, seq_len {config.MaxPositionEmbeddings}) needs {expected:N0} bytes, the file has {stream.Length:N0}.");
            return new LlamaWeightsReader(config, path, (name, target) => Read(stream, path, name, offsets[name], target), stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Where each weight starts in the file, and the file's expected length. llama2.c stores each kind of weight for all
    /// layers together, in this order (w1 = gate, w2 = down, w3 = up), then the final norm, RoPE tables it recomputes
    /// anyway (two of seq_len · head_size / 2), and the classifier when it is not shared with the embedding.
    /// </summary>
    private static (Dictionary<string, long> Offsets, long End) Layout(LlamaConfig config, bool sharedClassifier)
    {
        var shapes = HuggingFaceLlama.ExpectedShapes(config);
        var offsets = new Dictionary<string, long>(StringComparer.Ordinal);
        long offset = HeaderBytes;
        Add("model.embed_tokens.weight");
        foreach (var name in (string[])["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"])
            for (int i = 0; i < config.NumHiddenLayers; i++) Add($"model.layers.{i}.{name}.weight");
        Add("model.norm.weight");
        offset += 4L * config.MaxPositionEmbeddings * config.HeadDim;
        if (!sharedClassifier) Add("lm_head.weight");
        return (offsets, offset);

        void Add(string name)
        {
            offsets.Add(name, offset);
            offset += 4 * ShapeUtil.Count(shapes[name]);
        }
    }

    private static FileStream OpenRead(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"llama2.c checkpoint not found: {path}", path);
        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
    }

    private static (LlamaConfig Config, bool SharedClassifier) ReadHeader(FileStream stream, string path)
    {
        if (stream.Length < HeaderBytes)
            throw new InvalidDataException($"{path}: {stream.Length} bytes is too short for a llama2.c header ({HeaderBytes} bytes).");
        Span<int> h = stackalloc int[7];
        stream.ReadExactly(MemoryMarshal.AsBytes(h));
        int dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kvHeads = h[4], vocab = h[5], seqLen = h[6];
        const int Sane = 1 << 20; // no real model has a dimension this large; rejects garbage headers early
        foreach (int v in h)
            if (v < -Sane || v > Sane)
                throw new InvalidDataException($"{path}: not a llama2.c checkpoint (header [{string.Join(", ", h.ToArray())}] has values out of range).");
        bool shared = vocab > 0;
        var config = new LlamaConfig
        {
            HiddenSize = dim, IntermediateSize = hidden, NumHiddenLayers = layers, NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads, VocabSize = Math.Abs(vocab), MaxPositionEmbeddings = seqLen,
            RmsNormEps = 1e-5f, RopeTheta = 10000f, TieWordEmbeddings = shared, RopeInterleaved = true,
            BosTokenId = 1, EosTokenId = 2,
        };
        config.Validate($"{path} (llama2.c header)");
        return (config, shared);
    }

    /// <summary>Reads one tensor with positioned reads (no stream buffer: what is read is what the file holds now).</summary>
    private static void Read(FileStream stream, string path, string name, long offset, Tensor target)
    {
        var bytes = MemoryMarshal.AsBytes(target.AsSpan());
        int read = AtomicFile.ReadAt(stream.SafeFileHandle, bytes, offset);
        if (read < bytes.Length)
            throw new InvalidDataException($"{path}: the file ends at byte {offset + read:N0}, inside '{name}' (bytes {offset:N0} to {offset + bytes.Length:N0}); it was cut short after it was opened.");
    }
}
