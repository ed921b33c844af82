using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.PromptLearning;

/// <summary>
/// The trainable part of a prompt-learning adapter (PEFT's <c>prompt_encoder.&lt;adapter&gt;</c>): an "embedding" table
/// of the virtual tokens and, while training P-tuning or projected prefix tuning, an MLP over it.
/// <see cref="Forward"/> gives what the model consumes, [n, <see cref="OutputSize"/>]; that is also what PEFT saves
/// as "prompt_embeddings". A loaded adapter (PEFT's inference mode) holds that output as its table and no MLP.
/// </summary>
public abstract class PromptLearningEncoder : Module
{
    /// <summary>Creates the table [rows, width]: N(0, 1) draws from <paramref name="random"/>, or zeros to be loaded.</summary>
    private protected PromptLearningEncoder(int rows, int width, bool inferenceMode, Random? random)
    {
        InferenceMode = inferenceMode;
        Embedding = RegisterModule("embedding", new Embedding(rows, width, random, std: 1f));
    }

    /// <summary>The virtual token table ("embedding", [n, width]).</summary>
    public Embedding Embedding { get; }

    /// <summary>True for a loaded adapter: the table is the output and there is no MLP (PEFT's inference_mode).</summary>
    public bool InferenceMode { get; }

    /// <summary>Number of virtual tokens n.</summary>
    public int VirtualTokens => Embedding.Weight.Size(0);

    /// <summary>Width of one output row.</summary>
    public abstract int OutputSize { get; }

    /// <summary>The encoder output [n, <see cref="OutputSize"/>].</summary>
    public abstract Tensor Forward();

    /// <summary>Applies three (or two) linears with <paramref name="activation"/> between them: PEFT's Sequential with the activations at the odd indices.</summary>
    private protected static Tensor RunMlp(Tensor x, ModuleDict<Linear> layers, Func<Tensor, Tensor> activation)
    {
        var names = layers.Names.ToList();
        for (int i = 0; i < names.Count; i++)
        {
            x = layers[names[i]].Forward(x);                                                  // [n, width_i]
            if (i < names.Count - 1) x = activation(x);
        }
        return x;
    }
}

/// <summary>Prompt tuning's virtual tokens (PEFT's <c>PromptEmbedding</c>): the table itself, [n, hidden].</summary>
internal sealed class PromptEmbedding : PromptLearningEncoder
{
    /// <summary>Creates n virtual tokens of width <paramref name="hidden"/>, N(0, 1) when <paramref name="random"/> is given.</summary>
    public PromptEmbedding(int virtualTokens, int hidden, bool inferenceMode, Random? random)
        : base(virtualTokens, hidden, inferenceMode, random) => OutputSize = hidden;

    /// <inheritdoc />
    public override int OutputSize { get; }

    /// <inheritdoc />
    public override Tensor Forward() => Embedding.Weight;                                    // [n, hidden]
}

/// <summary>
/// P-tuning's prompt encoder (PEFT's <c>PromptEncoder</c>, MLP type): embedding [n, hidden] → "mlp_head" Linear(hidden, H)
/// → ReLU → Linear(H, H) → ReLU → Linear(H, hidden), children named "0", "2", "4" as in PEFT's Sequential.
/// </summary>
internal sealed class PromptEncoder : PromptLearningEncoder
{
    private readonly ModuleDict<Linear>? _mlpHead;

    /// <summary>Creates the encoder; in inference mode only the table [n, hidden] (the trained output) exists.</summary>
    public PromptEncoder(int virtualTokens, int hidden, int encoderHidden, bool inferenceMode, Random? random)
        : base(virtualTokens, hidden, inferenceMode, random)
    {
        OutputSize = hidden;
        if (inferenceMode) return;
        _mlpHead = RegisterModule("mlp_head", new ModuleDict<Linear>());
        _mlpHead.Add("0", new Linear(hidden, encoderHidden, hasBias: true, random: random));
        _mlpHead.Add("2", new Linear(encoderHidden, encoderHidden, hasBias: true, random: random));
        _mlpHead.Add("4", new Linear(encoderHidden, hidden, hasBias: true, random: random));
    }

    /// <inheritdoc />
    public override int OutputSize { get; }

    /// <inheritdoc />
    public override Tensor Forward() =>
        _mlpHead == null ? Embedding.Weight : RunMlp(Embedding.Weight, _mlpHead, Ops.Relu); // [n, hidden]
}

/// <summary>
/// Prefix tuning's prefix encoder (PEFT's <c>PrefixEncoder</c>): without projection the table [n, layers · 2 · kv_dim] is
/// the prefix; with it, embedding [n, kv_dim] → "transform" Linear(kv_dim, H) → tanh → Linear(H, layers · 2 · kv_dim),
/// children "0" and "2" as in PEFT's Sequential.
/// </summary>
internal sealed class PrefixEncoder : PromptLearningEncoder
{
    private readonly ModuleDict<Linear>? _transform;

    /// <summary>Creates the encoder for <paramref name="layers"/> layers of key/value width <paramref name="kvDim"/>.</summary>
    public PrefixEncoder(int virtualTokens, int layers, int kvDim, bool projection, int encoderHidden, bool inferenceMode, Random? random)
        : base(virtualTokens, projection && !inferenceMode ? kvDim : layers * 2 * kvDim, inferenceMode, random)
    {
        OutputSize = layers * 2 * kvDim;
        if (!projection || inferenceMode) return;
        _transform = RegisterModule("transform", new ModuleDict<Linear>());
        _transform.Add("0", new Linear(kvDim, encoderHidden, hasBias: true, random: random));
        _transform.Add("2", new Linear(encoderHidden, OutputSize, hasBias: true, random: random));
    }

    /// <inheritdoc />
    public override int OutputSize { get; }

    /// <inheritdoc />
    public override Tensor Forward() =>
        _transform == null ? Embedding.Weight : RunMlp(Embedding.Weight, _transform, Ops.Tanh); // [n, layers · 2 · kv_dim]
}
