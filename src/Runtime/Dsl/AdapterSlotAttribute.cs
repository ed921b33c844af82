namespace PeftGen;

/// <summary>
/// Marks a module member that stays empty in the base model and holds an adapter a PEFT method inserts later (for
/// example the bottleneck adapter after a decoder layer's attention). The DSL's compile-time module walk skips such
/// members: they are not part of the base model's shape, and the layers inside an inserted adapter are never targets.
/// </summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false, Inherited = true)]
public sealed class AdapterSlotAttribute : Attribute
{
}
