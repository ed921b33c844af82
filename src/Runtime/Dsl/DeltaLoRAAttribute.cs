namespace PeftGen;

/// <summary>
/// Delta-LoRA (Zi et al. 2023) for the class's <see cref="LoRAAttribute"/> adapters: after each optimizer step past
/// <see cref="StartStep"/> the frozen base weight also moves by λ·s·(B⁽ᵗ⁺¹⁾A⁽ᵗ⁺¹⁾ − B⁽ᵗ⁾A⁽ᵗ⁾). The generator sets
/// <see cref="Methods.LoRA.LoRAConfig.DeltaLoRA"/> on every adapter's configuration, and its <c>CreateTrainer</c> registers
/// the <see cref="Methods.DeltaLoRA.DeltaLoRAUpdater"/> of the active adapter. Needs a float base: not with <see cref="QuantizeAttribute"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class DeltaLoRAAttribute : Attribute
{
    /// <summary>Delta-LoRA with the paper's defaults: warm-up of 500 steps, update ratio 2.</summary>
    public DeltaLoRAAttribute()
        : this(500, 2)
    {
    }

    /// <summary>Delta-LoRA with warm-up <paramref name="startStep"/> and update ratio <paramref name="updateRatio"/>.</summary>
    /// <param name="startStep">K: optimizer steps that train only A and B before the base starts moving (≥ 0).</param>
    /// <param name="updateRatio">λ: how far the base moves per unit of the low-rank product's change (&gt; 0).</param>
    public DeltaLoRAAttribute(int startStep, double updateRatio)
    {
        StartStep = startStep;
        UpdateRatio = updateRatio;
    }

    /// <summary>K: optimizer steps before the base starts moving.</summary>
    public int StartStep { get; }

    /// <summary>λ: the update ratio.</summary>
    public double UpdateRatio { get; }
}
