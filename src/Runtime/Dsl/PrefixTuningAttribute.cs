namespace PeftGen;

/// <summary>
/// Declares prefix tuning (Li and Liang 2021) on a <c>partial</c> <see cref="Models.Llama.LlamaForCausalLM"/> subclass
/// instead of <see cref="LoRAAttribute"/>: n trainable keys and values per layer before the input. The generator turns it
/// into a static <see cref="Methods.PromptLearning.PrefixTuningConfig"/> and an <c>ApplyAdapters()</c> that returns a
/// <see cref="Methods.PromptLearning.PromptLearningModel"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class PrefixTuningAttribute : Attribute
{
    /// <summary>Prefix tuning with <paramref name="virtualTokens"/> virtual tokens.</summary>
    /// <param name="virtualTokens">n (PEFT's num_virtual_tokens): at least 1, fewer than the model's positions.</param>
    public PrefixTuningAttribute(int virtualTokens) => VirtualTokens = virtualTokens;

    /// <summary>The number of virtual tokens n.</summary>
    public int VirtualTokens { get; }

    /// <summary>Produce the prefix with the reparameterisation MLP (PEFT's prefix_projection); false by default.</summary>
    public bool Projection { get; set; }

    /// <summary>Hidden width of the projection MLP (PEFT's encoder_hidden_size); 0 (the default) uses kv_dim.</summary>
    public int EncoderHiddenSize { get; set; }

    /// <summary>Seed of the random initialisation.</summary>
    public int Seed { get; set; }
}
