namespace PeftGen;

/// <summary>
/// Declares prompt tuning (Lester et al. 2021) on a <c>partial</c> <see cref="Models.Llama.LlamaForCausalLM"/> subclass
/// instead of <see cref="LoRAAttribute"/>: n trainable virtual token embeddings [n, hidden] before the input. The
/// generator turns it into a static <see cref="Methods.PromptLearning.PromptTuningConfig"/> and an <c>ApplyAdapters(tokenizer)</c> that
/// returns a <see cref="Methods.PromptLearning.PromptLearningModel"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class PromptTuningAttribute : Attribute
{
    /// <summary>Prompt tuning with <paramref name="virtualTokens"/> virtual tokens.</summary>
    /// <param name="virtualTokens">n (PEFT's num_virtual_tokens): at least 1, fewer than the model's positions.</param>
    public PromptTuningAttribute(int virtualTokens) => VirtualTokens = virtualTokens;

    /// <summary>The number of virtual tokens n.</summary>
    public int VirtualTokens { get; }

    /// <summary>
    /// Start the virtual tokens from the embeddings of this text's tokens (PEFT's prompt_tuning_init = TEXT; pass the
    /// tokenizer to <c>ApplyAdapters</c>); null (the default) starts them random.
    /// </summary>
    public string? InitText { get; set; }

    /// <summary>Seed of the random initialisation.</summary>
    public int Seed { get; set; }
}
