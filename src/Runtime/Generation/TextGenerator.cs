using PeftGen.Autograd;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Text;

namespace PeftGen.Generation;

/// <summary>Autoregressive text generation with a KV cache: the prompt runs in one pass, then one token per step.</summary>
public sealed class TextGenerator
{
    private readonly LlamaForCausalLM _model;
    private readonly ITokenizer _tokenizer;

    /// <summary>Creates a generator for a model and its tokenizer.</summary>
    public TextGenerator(LlamaForCausalLM model, ITokenizer tokenizer)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (tokenizer.VocabSize != model.Config.VocabSize)
            throw new ArgumentException($"The tokenizer has {tokenizer.VocabSize} tokens but the model's vocabulary has {model.Config.VocabSize}: they do not belong together.", nameof(tokenizer));
    }

    /// <summary>Generates a continuation of <paramref name="prompt"/> and returns prompt and continuation as text.</summary>
    public string Generate(string prompt, SamplingOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var ids = GenerateIds(_tokenizer.Encode(prompt, addBos: true), options, cancellationToken);
        return _tokenizer.Decode(ids);
    }

    /// <summary>
    /// Generates after <paramref name="promptIds"/> (which should start with BOS) and returns all ids, prompt included.
    /// Generation stops after <see cref="SamplingOptions.MaxNewTokens"/>, at end-of-sequence, or when the model's
    /// context is full. <paramref name="onToken"/> sees each new id as it is chosen (for streaming output).
    /// </summary>
    public int[] GenerateIds(ReadOnlySpan<int> promptIds, SamplingOptions options, CancellationToken cancellationToken = default,
        Action<int>? onToken = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (promptIds.Length == 0) throw new ArgumentException("The prompt must hold at least one token (BOS).", nameof(promptIds));
        int reserved = _model.Model.VirtualTokens?.Count ?? 0;           // virtual positions sit in the cache first
        int context = _model.Config.MaxPositionEmbeddings - reserved;
        if (promptIds.Length > context)
            throw new ArgumentException($"The prompt is {promptIds.Length} tokens; the model's context is {context} (max_position_embeddings{(reserved > 0 ? $" less {reserved} virtual tokens" : "")}). Shorten the prompt.", nameof(promptIds));
        int capacity = Math.Min(context, promptIds.Length + options.MaxNewTokens);
        var ids = new List<int>(capacity);
        ids.AddRange(promptIds.ToArray());
        var sampler = new Sampler(options);
        bool wasTraining = _model.IsTraining;
        _model.Eval();
        using var cache = new KvCache(_model.Config, batch: 1, capacity + reserved);
        using var noGrad = GradMode.Disable();
        try
        {
            var logits = LastLogits(promptIds);
            while (ids.Count < capacity)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int next = sampler.Next(logits);
                if (options.StopAtEos && (next == _tokenizer.EosId || next == _tokenizer.BosId)) break;
                ids.Add(next);
                onToken?.Invoke(next);
                if (ids.Count == capacity) break;
                logits = LastLogits([next]);
            }
        }
        finally
        {
            _model.Train(wasTraining);
        }
        return ids.ToArray();

        float[] LastLogits(ReadOnlySpan<int> tokens)
        {
            using var scope = TensorScope.Begin();
            var all = _model.Forward(tokens, 1, tokens.Length, cache);                       // [1, t, vocab]
            return all.Slice(1, tokens.Length - 1, 1).ToArray();                             // [vocab]
        }
    }
}
