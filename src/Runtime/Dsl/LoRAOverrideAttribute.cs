namespace PeftGen;

/// <summary>
/// Overrides the rank and/or alpha of the layer held by a field or property (or, on a submodule, of every linear layer
/// under it), like PEFT's rank_pattern and alpha_pattern. The layer must still be targeted by the class's
/// <see cref="LoRAAttribute"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = true, Inherited = false)]
public sealed class LoRAOverrideAttribute : Attribute
{
    /// <summary>The rank for this layer; 0 (the default) keeps the adapter's rank.</summary>
    public int Rank { get; set; }

    /// <summary>The alpha for this layer; 0 (the default) keeps the adapter's alpha.</summary>
    public double Alpha { get; set; }

    /// <summary>The adapter the override belongs to; null (the default) applies it to every adapter.</summary>
    public string? Adapter { get; set; }
}
