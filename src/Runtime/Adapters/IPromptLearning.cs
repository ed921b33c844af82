using PeftGen.Tensors;

namespace PeftGen.Adapters;

/// <summary>
/// Learned keys and values one decoder layer attends to before the input (prefix tuning), in attention layout:
/// <see cref="Keys"/> and <see cref="Values"/> are [batch, n, kvHeads, headDim]. The keys carry no rotary embedding,
/// as in Hugging Face PEFT, where the prefix goes straight into the key/value cache.
/// </summary>
/// <param name="Keys">Prefix keys [b, n, kvHeads, headDim].</param>
/// <param name="Values">Prefix values [b, n, kvHeads, headDim].</param>
public sealed record KeyValuePrefix(Tensor Keys, Tensor Values);

/// <summary>
/// What a prompt-learning method (prompt tuning, P-tuning, prefix tuning) adds to a Llama forward pass, as
/// <see cref="Models.Llama.LlamaModel.PromptLearning"/> asks for it. The method's n virtual positions come first
/// (positions 0..n−1) and the real tokens follow at n, n+1, …, as in PEFT; with a KV cache they are written once, when
/// the cache is empty, and then live in the cache.
/// </summary>
public interface IPromptLearning
{
    /// <summary>Positions the method occupies before the real tokens (0 when it is disabled).</summary>
    int VirtualTokens { get; }

    /// <summary>Virtual token embeddings [batch, n, hidden] to put before the token embeddings, or null (prefix tuning).</summary>
    Tensor? VirtualTokenEmbeddings(int batch);

    /// <summary>One key/value prefix per decoder layer, or null (prompt tuning, P-tuning).</summary>
    IReadOnlyList<KeyValuePrefix>? KeyValuePrefixes(int batch);
}
