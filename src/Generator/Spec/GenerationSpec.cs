namespace PeftGen.Generator.Spec;

/// <summary>A model with its adapters resolved against the model config: what the emitter writes.</summary>
/// <param name="Model">The parsed class.</param>
/// <param name="Adapters">The <c>[LoRA]</c> adapters; empty for another method.</param>
/// <param name="Method">The plan of a method other than LoRA, or null for LoRA.</param>
/// <param name="Config">The config.json <c>[ModelConfig]</c> names, when the generator read it; null otherwise.</param>
internal sealed record GenerationSpec(ModelSpec Model, EquatableArray<AdapterOutputSpec> Adapters, MethodPlanSpec? Method = null, ModelConfigSpec? Config = null);

/// <summary>One adapter ready to emit.</summary>
/// <param name="Adapter">The attribute's values.</param>
/// <param name="MemberPrefix">Prefix of its generated members: "" for "default", else the name in PascalCase.</param>
/// <param name="Exclude">Attribute exclusions followed by <c>[NoLoRA]</c> ones.</param>
/// <param name="RankPattern">Per-layer ranks from <c>[LoRAOverride]</c>, by path or path suffix.</param>
/// <param name="AlphaPattern">Per-layer alphas from <c>[LoRAOverride]</c>, by path or path suffix.</param>
/// <param name="Plan">The adapted layers, or null when a shape or count is only known at run time.</param>
/// <param name="FileKeys">
/// The keys of the adapter's tensors in a PEFT <c>adapter_model.safetensors</c>, in module order: concrete when the
/// plan is known, else with "{i}" for module-list indices (layers the targets may select); null when not knowable.
/// </param>
internal sealed record AdapterOutputSpec(
    AdapterSpec Adapter,
    string MemberPrefix,
    EquatableArray<string> Exclude,
    EquatableArray<PatternEntrySpec> RankPattern,
    EquatableArray<PatternEntrySpec> AlphaPattern,
    EquatableArray<PlanRowSpec>? Plan,
    EquatableArray<string>? FileKeys = null);

/// <summary>A rank_pattern or alpha_pattern entry.</summary>
internal readonly record struct PatternEntrySpec(string Key, double Value);

/// <summary>One row of the compile-time adapter plan (the runtime's <c>AdaptedLayer</c>).</summary>
internal readonly record struct PlanRowSpec(
    string Path, int InFeatures, int OutFeatures, int Rank, float Alpha, float Scaling, bool Quantized, long TrainableParameters);
