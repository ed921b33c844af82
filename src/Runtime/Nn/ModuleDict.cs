namespace PeftGen.Nn;

/// <summary>Modules registered under names chosen at run time (PyTorch's <c>nn.ModuleDict</c>; PEFT keeps one adapter per name).</summary>
public sealed class ModuleDict<T> : Module where T : Module
{
    private readonly Dictionary<string, T> _items = new(StringComparer.Ordinal);

    /// <summary>Adds <paramref name="module"/> under <paramref name="name"/>.</summary>
    public void Add(string name, T module)
    {
        RegisterModule(name, module);
        _items.Add(name, module);
    }

    /// <summary>Removes and disposes the module named <paramref name="name"/>.</summary>
    public void Remove(string name)
    {
        UnregisterModule(name).Dispose();
        _items.Remove(name);
    }

    /// <summary>The module named <paramref name="name"/>.</summary>
    public T this[string name] => _items.TryGetValue(name, out var m) ? m : throw new KeyNotFoundException($"No entry named '{name}' (have: {string.Join(", ", _items.Keys)}).");

    /// <summary>True when an entry named <paramref name="name"/> exists.</summary>
    public bool Contains(string name) => _items.ContainsKey(name);

    /// <summary>The names, in insertion order.</summary>
    public IEnumerable<string> Names => Children().Select(c => c.Name);

    /// <summary>Number of entries.</summary>
    public int Count => _items.Count;
}
