namespace PeftGen;

/// <summary>
/// Keeps adapters off the layer held by a field or property (or, on a submodule, off every linear layer under it),
/// even when the class's targets match it.
/// </summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false, Inherited = false)]
public sealed class NoLoRAAttribute : Attribute;
