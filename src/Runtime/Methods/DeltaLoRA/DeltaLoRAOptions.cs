using PeftGen.Methods.LoRA;

namespace PeftGen.Methods.DeltaLoRA;

/// <summary>Delta-LoRA's settings (Zi et al. 2023), set on <see cref="LoRAConfig.DeltaLoRA"/>.</summary>
public sealed record DeltaLoRAOptions
{
    /// <summary>K: optimizer steps that train only A and B before the base starts moving (the paper's warm-up).</summary>
    public int StartStep { get; init; } = 500;

    /// <summary>λ: the base moves by λ·s·(B⁽ᵗ⁺¹⁾A⁽ᵗ⁺¹⁾ − B⁽ᵗ⁾A⁽ᵗ⁾) (the paper's update ratio, default 2).</summary>
    public float UpdateRatio { get; init; } = 2f;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (StartStep < 0) throw new ArgumentException($"Delta-LoRA StartStep must be ≥ 0 (got {StartStep}).", nameof(StartStep));
        if (!float.IsFinite(UpdateRatio) || UpdateRatio <= 0)
            throw new ArgumentException($"Delta-LoRA UpdateRatio (λ) must be finite and > 0 (got {UpdateRatio}).", nameof(UpdateRatio));
    }
}
