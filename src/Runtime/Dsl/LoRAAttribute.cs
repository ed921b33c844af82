using PeftGen.Methods.LoRA;

namespace PeftGen;

/// <summary>
/// Declares a LoRA adapter on a <c>partial</c> model class (a <see cref="Nn.Module"/>). The PeftGen source generator
/// turns it into a static <see cref="Methods.LoRA.LoRAConfig"/>, an <c>ApplyAdapters()</c> method and, when every targeted
/// layer's shape is known at compile time, the adapter plan with its trainable-parameter count. Declare the
/// attribute several times with different <see cref="Name"/>s for several adapters; the first one declared is active.
/// </summary>
/// <remarks>
/// Real-valued settings are <see cref="double"/> so that ordinary literals (<c>Dropout = 0.05</c>) compile; the generated
/// configuration stores them as <see cref="float"/>, like the runtime.
/// </remarks>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = false)]
public sealed class LoRAAttribute : Attribute
{
    /// <summary>
    /// An adapter of rank <paramref name="rank"/> with PEFT's default alpha of 8 (scaling 8 / rank, whatever the rank).
    /// </summary>
    /// <param name="rank">Rank r of the update B·A.</param>
    /// <param name="targets">
    /// The layers to adapt, with PEFT's rules: a comma-separated list of names, each matching a layer path exactly or as
    /// its last segments ("q_proj,v_proj"); a regular expression that must match the whole path (any of
    /// <c>^ $ ( ) [ ] * + ? | \</c> makes the text a regex); or "all-linear" (every linear layer except the output head).
    /// </param>
    public LoRAAttribute(int rank, string targets)
        : this(rank, DefaultAlpha, targets)
    {
    }

    /// <summary>An adapter of rank <paramref name="rank"/> scaled by <paramref name="alpha"/> / rank.</summary>
    /// <param name="rank">Rank r of the update B·A.</param>
    /// <param name="alpha">Numerator of the scaling (alpha / r, or alpha / √r with <see cref="UseRsLoRA"/>).</param>
    /// <param name="targets">The layers to adapt; see <see cref="LoRAAttribute(int, string)"/>.</param>
    public LoRAAttribute(int rank, double alpha, string targets)
    {
        Rank = rank;
        Alpha = alpha;
        Targets = targets;
    }

    /// <summary>
    /// The alpha used when none is given: 8, PEFT's <c>LoraConfig</c> default, so a PeftGen adapter and a PEFT adapter
    /// declared with the same rank scale alike. State alpha explicitly for other ranks (rank or 2·rank are common).
    /// </summary>
    public const double DefaultAlpha = 8;

    /// <summary>Rank r of the update B·A.</summary>
    public int Rank { get; }

    /// <summary>Numerator of the scaling; <see cref="DefaultAlpha"/> unless given to the constructor.</summary>
    public double Alpha { get; }

    /// <summary>The targeted layers as written (list, regex or "all-linear").</summary>
    public string Targets { get; }

    /// <summary>Dropout probability on the adapter's input, in [0, 1); 0 (the default) disables it.</summary>
    public double Dropout { get; set; }

    /// <summary>rsLoRA: scale by alpha / √r instead of alpha / r (steadier at high ranks).</summary>
    public bool UseRsLoRA { get; set; }

    /// <summary>DoRA: learn a per-row magnitude over the normalised adapted weight (adds out parameters per layer).</summary>
    public bool UseDoRA { get; set; }

    /// <summary>
    /// LoRA-FA (Zhang et al. 2023): A stays frozen at its initialisation and only B trains (r·out parameters per layer),
    /// so the backward pass needs only A·x, not the layer's input x. Cannot be combined with <see cref="UseDoRA"/>.
    /// </summary>
    public bool UseLoRAFA { get; set; }

    /// <summary>LoRA-FA's optional correction of B's gradient by (A·Aᵀ)⁻¹ (needs <see cref="UseLoRAFA"/>).</summary>
    public bool LoRAFAGradientCorrection { get; set; }

    /// <summary>How A is initialised (B always starts at zero); Kaiming-uniform by default, like PEFT.</summary>
    public LoRAInit Init { get; set; } = LoRAInit.KaimingUniform;

    /// <summary>Which biases train alongside the adapter; none by default.</summary>
    public LoRABias Bias { get; set; } = LoRABias.None;

    /// <summary>Comma-separated layer names (exact path or last segments) to leave alone even when targeted.</summary>
    public string? Exclude { get; set; }

    /// <summary>Only adapt the decoder layers with these indices (PEFT's layers_to_transform); all when null.</summary>
    public int[]? Layers { get; set; }

    /// <summary>The adapter's name (PEFT's adapter_name); "default" unless several adapters are declared.</summary>
    public string Name { get; set; } = "default";

    /// <summary>Seed of A's initialisation and of the dropout masks.</summary>
    public int Seed { get; set; }
}
