using PeftGen.Methods.PromptLearning;

namespace PeftGen;

/// <summary>
/// Declares P-tuning (Liu et al. 2021) on a <c>partial</c> <see cref="Models.Llama.LlamaForCausalLM"/> subclass instead
/// of <see cref="LoRAAttribute"/>: virtual tokens produced by a small trainable encoder. The generator turns it into a
/// static <see cref="Methods.PromptLearning.PTuningConfig"/> and an <c>ApplyAdapters()</c> that returns a
/// <see cref="Methods.PromptLearning.PromptLearningModel"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class PTuningAttribute : Attribute
{
    /// <summary>P-tuning with <paramref name="virtualTokens"/> virtual tokens and an encoder as wide as the model.</summary>
    /// <param name="virtualTokens">n (PEFT's num_virtual_tokens): at least 1, fewer than the model's positions.</param>
    public PTuningAttribute(int virtualTokens)
        : this(virtualTokens, 0)
    {
    }

    /// <summary>P-tuning with <paramref name="virtualTokens"/> virtual tokens and an encoder of width <paramref name="encoderHiddenSize"/>.</summary>
    /// <param name="virtualTokens">n (PEFT's num_virtual_tokens): at least 1, fewer than the model's positions.</param>
    /// <param name="encoderHiddenSize">Hidden width H of the encoder (PEFT's encoder_hidden_size); 0 uses the model's hidden size.</param>
    public PTuningAttribute(int virtualTokens, int encoderHiddenSize)
    {
        VirtualTokens = virtualTokens;
        EncoderHiddenSize = encoderHiddenSize;
    }

    /// <summary>The number of virtual tokens n.</summary>
    public int VirtualTokens { get; }

    /// <summary>Hidden width H of the encoder; 0 uses the model's hidden size.</summary>
    public int EncoderHiddenSize { get; }

    /// <summary>The encoder (PEFT's encoder_reparameterization_type); only <see cref="PromptEncoderType.Mlp"/> trains.</summary>
    public PromptEncoderType EncoderType { get; set; } = PromptEncoderType.Mlp;

    /// <summary>Seed of the random initialisation.</summary>
    public int Seed { get; set; }
}
