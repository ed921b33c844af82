using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods;

/// <summary>
/// A frozen linear layer wrapped with named adapters (LoRA, VeRA, (IA)³): the bookkeeping they share, as PEFT's
/// <c>BaseTunerLayer</c> does: the base under PEFT's in-memory name "base_layer", the adapter names, which adapters are
/// active, which are merged into the base weight, and the switch that disables them all.
/// </summary>
public abstract class AdaptedLinear : LinearBase
{
    private string[] _active = [];

    /// <summary>Registers <paramref name="baseLayer"/> as "base_layer" (first, so state dicts list it before the adapters).</summary>
    private protected AdaptedLinear(LinearBase baseLayer) =>
        BaseLayer = RegisterModule("base_layer", baseLayer ?? throw new ArgumentNullException(nameof(baseLayer)));

    /// <summary>The frozen layer being adapted.</summary>
    public LinearBase BaseLayer { get; }

    /// <inheritdoc />
    public override int InFeatures => BaseLayer.InFeatures;

    /// <inheritdoc />
    public override int OutFeatures => BaseLayer.OutFeatures;

    /// <inheritdoc />
    public override Tensor? Bias => BaseLayer.Bias;

    /// <summary>Adapter names, in the order they were added.</summary>
    public abstract IEnumerable<string> AdapterNames { get; }

    /// <summary>Adapters that contribute to the output.</summary>
    public IReadOnlyList<string> ActiveAdapters => _active;

    /// <summary>Adapters currently merged into the base weight.</summary>
    public IReadOnlyList<string> MergedAdapters => Merged;

    /// <summary>When true the layer returns the base output only (PEFT's disable_adapter).</summary>
    public bool AdaptersDisabled { get; set; }

    /// <summary>The merged adapters, for the derived layer's merge and unmerge.</summary>
    private protected List<string> Merged { get; } = new();

    /// <summary>Chooses which adapters contribute (all must exist).</summary>
    /// <exception cref="KeyNotFoundException">A name is not an adapter of this layer.</exception>
    public void SetActiveAdapters(params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        foreach (var n in names) RequireAdapter(n);
        _active = names.ToArray();
    }

    /// <summary>Removes adapter <paramref name="name"/> from this layer (unmerge it first if merged).</summary>
    /// <exception cref="KeyNotFoundException">The layer has no such adapter.</exception>
    /// <exception cref="InvalidOperationException">The adapter is merged.</exception>
    public abstract void DeleteAdapter(string name);

    /// <summary>Folds the active adapters into the base weight (reversible with <see cref="Unmerge"/>).</summary>
    /// <exception cref="InvalidOperationException">The base cannot be changed in place (a 4-bit base: merge and unload instead).</exception>
    public abstract void Merge();

    /// <summary>Undoes <see cref="Merge"/>.</summary>
    public abstract void Unmerge();

    /// <summary>Throws <see cref="KeyNotFoundException"/> (listing the adapters) unless <paramref name="name"/> is one.</summary>
    private protected abstract void RequireAdapter(string name);

    /// <summary>Adds <paramref name="name"/> to the active adapters (a new adapter starts active).</summary>
    private protected void Activate(string name) => _active = [.. _active, name];

    /// <summary>Checks that <paramref name="name"/> exists and is not merged, then drops it from the active adapters.</summary>
    /// <exception cref="InvalidOperationException">The adapter is merged.</exception>
    private protected void PrepareDelete(string name)
    {
        RequireAdapter(name);
        if (Merged.Contains(name)) throw new InvalidOperationException($"Adapter '{name}' is merged; unmerge it before deleting.");
        _active = _active.Where(a => a != name).ToArray();
    }
}
