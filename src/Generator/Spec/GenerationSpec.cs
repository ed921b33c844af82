using PeftGen.Generator.Methods;

namespace PeftGen.Generator.Spec;

/// <summary>A model with its method resolved against the model config: what the emitter writes.</summary>
/// <param name="Model">The parsed class.</param>
/// <param name="Method">The method's plan (its own record per method: LoRA's adapters, VeRA's layers, …).</param>
/// <param name="Config">The config.json <c>[ModelConfig]</c> names, when the generator read it; null otherwise.</param>
internal sealed record GenerationSpec(ModelSpec Model, MethodPlan Method, ModelConfigSpec? Config);
