using System.Runtime.InteropServices;
using PeftGen.Models.Llama;

namespace PeftGen.IO;

/// <summary>
/// Reads llama2.c checkpoints (the legacy "version 0" format of <c>run.c</c>): a header of seven int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab size marks an
/// unshared classifier) followed by float32 weights in a fixed order.
/// </summary>
public static class Llama2Checkpoint
{
    /// <summary>Bytes of the header: seven int32.</summary>
    internal const int HeaderBytes = 7 * sizeof(int);

    /// <summary>Reads only the header and returns the model configuration it describes.</summary>
    public static LlamaConfig ReadConfig(string path) => ReadHeader(path, out _).Config;

    /// <summary>
    /// Loads a checkpoint into a new float32 <see cref="LlamaForCausalLM"/> (RoPE on interleaved pairs, as llama2.c),
    /// reading one tensor at a time. <see cref="ModelLoader.Load(string, ModelLoadOptions?)"/> loads it with 4-bit or
    /// 16-bit weights instead.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is truncated or its header is inconsistent; the message names the file.</exception>
    public static LlamaForCausalLM Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"llama2.c checkpoint not found: {path}", path);
        return ModelLoader.Load(path);
    }

    /// <summary>The configuration in the header of <paramref name="path"/> and whether the classifier is the shared embedding.</summary>
    internal static (LlamaConfig Config, bool SharedClassifier) ReadHeader(string path, out long fileLength)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"llama2.c checkpoint not found: {path}", path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
        fileLength = stream.Length;
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
}
