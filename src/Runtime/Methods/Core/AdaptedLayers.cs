namespace PeftGen.Methods;

/// <summary>
/// What a model does to all of its adapted layers at once (PEFT's tuner-level disable, delete, merge), written once for
/// every method whose layers derive from <see cref="AdaptedLinear"/>.
/// </summary>
internal static class AdaptedLayers
{
    /// <summary>The active adapters (every layer activates the same ones; none when there are no layers).</summary>
    public static IReadOnlyList<string> Active(IEnumerable<AdaptedLinear> layers) =>
        layers.Select(l => l.ActiveAdapters).FirstOrDefault() ?? [];

    /// <summary>Runs the base model without adapters until the returned scope is disposed (PEFT's disable_adapter()).</summary>
    public static IDisposable Disable(IReadOnlyList<AdaptedLinear> layers)
    {
        foreach (var layer in layers) layer.AdaptersDisabled = true;
        return new Restore(() =>
        {
            foreach (var layer in layers) layer.AdaptersDisabled = false;
        });
    }

    /// <summary>Removes adapter <paramref name="name"/> from every layer that has it.</summary>
    public static void Delete(IEnumerable<AdaptedLinear> layers, string name)
    {
        foreach (var layer in layers)
            if (layer.AdapterNames.Contains(name)) layer.DeleteAdapter(name);
    }

    /// <summary>Folds the active adapters into float base weights (reversible with <see cref="Unmerge"/>).</summary>
    public static void Merge(IEnumerable<AdaptedLinear> layers)
    {
        foreach (var layer in layers) layer.Merge();
    }

    /// <summary>Undoes <see cref="Merge"/>.</summary>
    public static void Unmerge(IEnumerable<AdaptedLinear> layers)
    {
        foreach (var layer in layers) layer.Unmerge();
    }
}
