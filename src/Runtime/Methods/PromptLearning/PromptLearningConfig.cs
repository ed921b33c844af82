namespace PeftGen.Methods.PromptLearning;

/// <summary>
/// Settings shared by the prompt-learning methods (PEFT's <c>PromptLearningConfig</c>): n virtual tokens that take
/// positions 0..n−1 before the real tokens. The model-derived fields PEFT also stores (token_dim, num_layers,
/// num_attention_heads) are filled in from the model when the adapter is created.
/// </summary>
public abstract record PromptLearningConfig
{
    /// <summary>Number of virtual tokens n (PEFT's num_virtual_tokens), at least 1.</summary>
    public int NumVirtualTokens { get; init; } = 20;

    /// <summary>Seed of the random initialisation.</summary>
    public int Seed { get; init; }

    /// <summary>PEFT's peft_type string: "PROMPT_TUNING", "PREFIX_TUNING" or "P_TUNING".</summary>
    public abstract string PeftType { get; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public virtual void Validate()
    {
        if (NumVirtualTokens < 1)
            throw new ArgumentException($"{PeftType}: num_virtual_tokens must be ≥ 1 (got {NumVirtualTokens}); prompt learning needs at least one virtual token.", nameof(NumVirtualTokens));
    }
}

/// <summary>How prompt tuning's virtual token embeddings start (PEFT's PromptTuningInit).</summary>
public enum PromptTuningInit
{
    /// <summary>N(0, 1) draws, as PyTorch's nn.Embedding ("RANDOM", PEFT's default).</summary>
    Random,
    /// <summary>The embeddings of the tokens of <see cref="PromptTuningConfig.InitText"/>, repeated or cut to n ("TEXT").</summary>
    Text,
}

/// <summary>
/// Prompt tuning (Lester et al. 2021), mirroring PEFT's <c>PromptTuningConfig</c>: n trainable virtual token embeddings
/// [n, hidden] put before the input embeddings. Trainable parameters: n · hidden.
/// </summary>
public sealed record PromptTuningConfig : PromptLearningConfig
{
    /// <summary>How the embeddings start (PEFT's prompt_tuning_init).</summary>
    public PromptTuningInit Init { get; init; } = PromptTuningInit.Random;

    /// <summary>
    /// The text whose token embeddings start the virtual tokens when <see cref="Init"/> is Text (PEFT's
    /// prompt_tuning_init_text); tokenized with BOS first, as Hugging Face tokenizers do for Llama.
    /// </summary>
    public string? InitText { get; init; }

    /// <inheritdoc />
    public override string PeftType => "PROMPT_TUNING";

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (Init == PromptTuningInit.Text && string.IsNullOrEmpty(InitText))
            throw new ArgumentException("PROMPT_TUNING: prompt_tuning_init = TEXT needs prompt_tuning_init_text (InitText); give the text or use Random.", nameof(InitText));
        if (!Enum.IsDefined(Init)) throw new ArgumentException($"PROMPT_TUNING: unknown init {Init}.", nameof(Init));
    }
}

/// <summary>
/// Prefix tuning (Li and Liang 2021), mirroring PEFT's <c>PrefixTuningConfig</c>: n trainable keys and values per layer
/// that every query attends to before the input. Without projection the prefix is a table [n, layers · 2 · kv_dim]
/// (trainable: layers · 2 · n · kv_dim); with <see cref="PrefixProjection"/> it is produced by
/// embedding [n, kv_dim] → Linear → tanh → Linear → [n, layers · 2 · kv_dim] (the MLP adds its weights and biases).
/// kv_dim is num_key_value_heads · head_dim, PEFT's token_dim for grouped-query models.
/// </summary>
public sealed record PrefixTuningConfig : PromptLearningConfig
{
    /// <summary>Produce the prefix with the reparameterisation MLP (PEFT's prefix_projection).</summary>
    public bool PrefixProjection { get; init; }

    /// <summary>Hidden width of the MLP (PEFT's encoder_hidden_size); null uses kv_dim, as PEFT does.</summary>
    public int? EncoderHiddenSize { get; init; }

    /// <inheritdoc />
    public override string PeftType => "PREFIX_TUNING";

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (EncoderHiddenSize is < 1)
            throw new ArgumentException($"PREFIX_TUNING: encoder_hidden_size must be ≥ 1 (got {EncoderHiddenSize}).", nameof(EncoderHiddenSize));
    }
}

/// <summary>The prompt encoder of P-tuning (PEFT's encoder_reparameterization_type).</summary>
public enum PromptEncoderType
{
    /// <summary>Linear → ReLU → Linear → ReLU → Linear ("MLP", PEFT's default).</summary>
    Mlp,
    /// <summary>A bidirectional LSTM and an MLP head ("LSTM"): adapters trained with it load, but training one is not supported.</summary>
    Lstm,
}

/// <summary>
/// P-tuning (Liu et al. 2021), mirroring PEFT's <c>PromptEncoderConfig</c>: virtual tokens produced by a small trainable
/// encoder from an embedding [n, hidden]: Linear(hidden, H) → ReLU → Linear(H, H) → ReLU → Linear(H, hidden), with
/// biases. Trainable parameters: n · hidden + (hidden·H + H) + (H·H + H) + (H·hidden + hidden).
/// </summary>
public sealed record PTuningConfig : PromptLearningConfig
{
    /// <summary>Hidden width H of the encoder (PEFT's encoder_hidden_size); null uses the model's hidden size.</summary>
    public int? EncoderHiddenSize { get; init; }

    /// <summary>The encoder (PEFT's encoder_reparameterization_type); only Mlp trains here.</summary>
    public PromptEncoderType EncoderType { get; init; } = PromptEncoderType.Mlp;

    /// <inheritdoc />
    public override string PeftType => "P_TUNING";

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (EncoderHiddenSize is < 1)
            throw new ArgumentException($"P_TUNING: encoder_hidden_size must be ≥ 1 (got {EncoderHiddenSize}).", nameof(EncoderHiddenSize));
        if (!Enum.IsDefined(EncoderType)) throw new ArgumentException($"P_TUNING: unknown encoder type {EncoderType}.", nameof(EncoderType));
    }
}
