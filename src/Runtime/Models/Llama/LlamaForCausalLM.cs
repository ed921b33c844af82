using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Models.Llama;

/// <summary>
/// A Llama-family causal language model (Llama 2/3, Mistral, Qwen2, SmolLM, TinyLlama shapes): the decoder
/// stack "model" and the output head "lm_head" (or the token embedding, when tied). Parameter paths match
/// Hugging Face checkpoints.
/// </summary>
public class LlamaForCausalLM : Module
{
    /// <summary>
    /// Builds the model. With <paramref name="seed"/>, weights are random (embedding N(0, 0.02²), linears
    /// Kaiming-uniform as in PyTorch, norms 1); without, zeros awaiting a checkpoint.
    /// </summary>
    public LlamaForCausalLM(LlamaConfig config, int? seed = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var random = seed is int s ? new Random(s) : null;
        Model = RegisterModule("model", new LlamaModel(config, random));
        if (!config.TieWordEmbeddings)
            LmHead = RegisterModule("lm_head", new Linear(config.HiddenSize, config.VocabSize, random: random));
    }

    /// <summary>The model's configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The decoder stack.</summary>
    [ModuleName("model")]
    public LlamaModel Model { get; }

    /// <summary>The output head [vocab, hidden], or null when tied to the token embedding.</summary>
    [ModuleName("lm_head")]
    public Linear? LmHead { get; }

    /// <summary>Whether <paramref name="path"/> is the output head ("lm_head"), which "all linear layers" selections leave out.</summary>
    internal static bool IsOutputHead(string path) => path == "lm_head" || path.EndsWith(".lm_head", StringComparison.Ordinal);

    /// <summary>The output projection weight [vocab, hidden] (the embedding when tied).</summary>
    public Tensor OutputWeight => LmHead?.Weight ?? Model.EmbedTokens.Weight;

    /// <summary>Next-token logits [b, t, vocab] for token ids laid out [b, t].</summary>
    public Tensor Forward(ReadOnlySpan<int> ids, int batch, int time, KvCache? cache = null)
    {
        var h = Hidden(ids, batch, time, cache);                                            // [b, t, hidden]
        using (Backends.WorkProfiler.Gemms(Backends.WorkKind.HeadGemm))
            return Ops.Linear(h, OutputWeight);                                            // [b, t, vocab]
    }

    /// <summary>The decoder stack's output [b, t, hidden] for token ids laid out [b, t], after checking the positions fit.</summary>
    private Tensor Hidden(ReadOnlySpan<int> ids, int batch, int time, KvCache? cache)
    {
        if (ids.Length != batch * time)
            throw new ArgumentException($"{ids.Length} token ids do not fill a [{batch}, {time}] batch.", nameof(ids));
        int past = cache?.Length ?? 0;
        if (past == 0) past = Model.VirtualTokens?.Count ?? 0;                          // virtual tokens take positions 0..n-1
        if (past + time > Config.MaxPositionEmbeddings)
            throw new ArgumentException($"Positions {past}..{past + time - 1} exceed the model's context of {Config.MaxPositionEmbeddings} tokens (max_position_embeddings); shorten the input.", nameof(time));
        return Model.Forward(ids, batch, time, cache);                                     // [b, t, hidden]
    }

    /// <summary>
    /// Mean next-token cross-entropy (<see cref="Ops.LinearCrossEntropy"/>): logits of <paramref name="inputs"/> against <paramref name="targets"/>, both
    /// laid out [b, t]; targets equal to <paramref name="ignoreIndex"/> (prompt or padding) are skipped.
    /// </summary>
    public Tensor Loss(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int time, int ignoreIndex = -100)
    {
        if (targets.Length != inputs.Length)
            throw new ArgumentException($"{targets.Length} targets for {inputs.Length} inputs.", nameof(targets));
        var h = Hidden(inputs, batch, time, cache: null);                                   // [b, t, hidden]
        // The head and the loss fused: the [b·t, vocab] logits become their own gradient in place (one buffer, not two).
        using (Backends.WorkProfiler.Gemms(Backends.WorkKind.HeadGemm))
            return Ops.LinearCrossEntropy(h.Reshape(batch * time, Config.HiddenSize), OutputWeight, targets, ignoreIndex);
    }
}
