namespace PeftGen.Generator.Spec;

/// <summary>
/// Message formats shared by a compile-time diagnostic and the run-time check the generator emits where the compiler
/// cannot know the shapes. This file is compiled into both the generator and the analyzers, so the two texts cannot
/// drift apart.
/// </summary>
internal static class ShapeMessages
{
    /// <summary>
    /// PEFT003, and the run-time rank check of generated <c>ApplyAdapters()</c>. Arguments: {0} the rank, {1} min(in, out),
    /// {2} the layer's path, {3} out features, {4} in features (the weight is [out, in]), all formatted invariantly.
    /// </summary>
    public const string RankTooLarge =
        "LoRA rank {0} exceeds min(in, out) = {1} of '{2}' (weight [{3}, {4}]); lower the rank or override it for this layer with [LoRAOverride(Rank = …)]";
}
