namespace PeftGen.Generation;

/// <summary>How the next token is chosen.</summary>
public sealed record SamplingOptions
{
    /// <summary>Tokens to generate after the prompt.</summary>
    public int MaxNewTokens { get; init; } = 256;

    /// <summary>0 picks the most likely token (greedy); higher values flatten the distribution.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Nucleus sampling: sample from the smallest set of tokens whose probability reaches this mass (1 disables).</summary>
    public float TopP { get; init; } = 0.9f;

    /// <summary>Seed of the sampler; the same seed, model and prompt give the same text.</summary>
    public int Seed { get; init; }

    /// <summary>Stop when the model emits end-of-sequence (or llama2.c's BOS delimiter).</summary>
    public bool StopAtEos { get; init; } = true;

    /// <summary>Greedy decoding.</summary>
    public static SamplingOptions Greedy(int maxNewTokens) => new() { MaxNewTokens = maxNewTokens, Temperature = 0f, TopP = 1f };

    internal void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "must be zero or more");
        if (!(Temperature >= 0f) || float.IsInfinity(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "must be a finite value ≥ 0");
        if (!(TopP > 0f && TopP <= 1f)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "must be in (0, 1]");
    }
}
