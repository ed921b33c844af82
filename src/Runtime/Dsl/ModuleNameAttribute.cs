namespace PeftGen;

/// <summary>
/// The PyTorch-style name a child module is registered under (for example "q_proj" for a <c>QProj</c> property). The
/// generator reads it, from source or from a referenced assembly's metadata, to build layer paths such as
/// <c>model.layers.0.self_attn.q_proj</c>; without it, the field or property name is used.
/// </summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false, Inherited = true)]
public sealed class ModuleNameAttribute : Attribute
{
    /// <summary>Names the child module.</summary>
    /// <param name="name">The registered name: non-empty, without dots.</param>
    public ModuleNameAttribute(string name) => Name = name;

    /// <summary>The registered name.</summary>
    public string Name { get; }
}
