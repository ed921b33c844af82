using PeftGen.Tensors;

namespace PeftGen.Models;

/// <summary>
/// A hook of a decoder stack (<see cref="Llama.LlamaModel.VirtualTokens"/>): n positions put before the real tokens of
/// every forward pass, filled either as embeddings that enter the first layer or as keys and values that every attention
/// layer sees. The virtual positions come first (0..n−1) and the real tokens follow at n, n+1, …; with a KV cache they
/// are written once, when the cache is empty, and then live in the cache. The model returns hidden states of the real
/// tokens only. Null (the default) runs the plain model at no cost.
/// </summary>
/// <remarks>
/// One hook rather than an embedding hook and an attention hook: both fill the same positions, so the model's position
/// bookkeeping (RoPE offsets, the context-length check, the cache) is the same for either.
/// </remarks>
public interface IVirtualTokens
{
    /// <summary>n: positions the hook occupies before the real tokens (0 when it adds none, for example while disabled).</summary>
    int Count { get; }

    /// <summary>Embeddings [batch, n, hidden] to put before the token embeddings, or null when the positions are keys/values.</summary>
    Tensor? Embeddings(int batch);

    /// <summary>One <see cref="KeyValuePrefix"/> per decoder layer, or null when the positions are embeddings.</summary>
    IReadOnlyList<KeyValuePrefix>? KeyValues(int batch);
}
