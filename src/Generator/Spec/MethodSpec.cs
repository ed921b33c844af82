namespace PeftGen.Generator.Spec;

/// <summary>The PEFT methods a class can declare with one attribute; exactly one per class.</summary>
internal enum PeftMethod
{
    LoRA,
    VeRA,
    IA3,
    PromptTuning,
    PrefixTuning,
    PTuning,
    Bottleneck,
    SparseFineTuning,
}

/// <summary>A method attribute other than <c>[LoRA]</c>, its values as written (defaults filled in).</summary>
/// <param name="Kind">Which method.</param>
internal abstract record MethodSpec(PeftMethod Kind);

/// <summary><c>[VeRA]</c>.</summary>
internal sealed record VeraSpec(
    int Rank,
    TargetSpec Targets,
    double DInitial,
    int ProjectionSeed,
    bool SaveProjection,
    double Dropout,
    EquatableArray<string> Exclude,
    EquatableArray<int>? Layers,
    int Seed) : MethodSpec(PeftMethod.VeRA);

/// <summary><c>[IA3]</c>; <paramref name="FeedForward"/> is resolved (PEFT's down_proj default applied), null for none.</summary>
internal sealed record IA3Spec(
    TargetSpec Targets,
    TargetSpec? FeedForward,
    EquatableArray<string> Exclude,
    bool InitWeights,
    int Seed) : MethodSpec(PeftMethod.IA3);

/// <summary><c>[PromptTuning]</c>, <c>[PrefixTuning]</c> or <c>[PTuning]</c>; fields that do not apply keep their defaults.</summary>
/// <param name="Kind">PromptTuning, PrefixTuning or PTuning.</param>
/// <param name="VirtualTokens">n.</param>
/// <param name="InitText">Prompt tuning's init text, or null for random.</param>
/// <param name="Projection">Prefix tuning's reparameterisation MLP.</param>
/// <param name="EncoderHiddenSize">The encoder width; 0 for the method's default.</param>
/// <param name="EncoderType">P-tuning's encoder.</param>
/// <param name="Seed">Seed of the initialisation.</param>
internal sealed record PromptSpec(
    PeftMethod Kind,
    int VirtualTokens,
    string? InitText,
    bool Projection,
    int EncoderHiddenSize,
    EnumValueSpec EncoderType,
    int Seed) : MethodSpec(Kind);

/// <summary><c>[Bottleneck]</c>; <paramref name="Size"/> 0 derives the width from <paramref name="ReductionFactor"/>.</summary>
internal sealed record BottleneckSpec(
    int Size,
    int ReductionFactor,
    EnumValueSpec Placement,
    EnumValueSpec Activation,
    bool Bias,
    EquatableArray<int>? Layers,
    int Seed) : MethodSpec(PeftMethod.Bottleneck);

/// <summary><c>[SparseFineTuning]</c>.</summary>
internal sealed record SparseSpec(
    double Fraction,
    TargetSpec Targets,
    EnumValueSpec Score,
    int CalibrationBatches) : MethodSpec(PeftMethod.SparseFineTuning);

/// <summary>The training companions of a method attribute; null members are absent.</summary>
/// <param name="DeltaLoRA"><c>[DeltaLoRA]</c>.</param>
/// <param name="LayerDrop"><c>[LayerDrop]</c>.</param>
/// <param name="LayerwiseDecay">The <c>[LayerwiseLearningRate]</c> decay.</param>
internal sealed record TrainingSpec(DeltaLoRASpec? DeltaLoRA, LayerDropSpec? LayerDrop, double? LayerwiseDecay);

/// <summary><c>[DeltaLoRA]</c>.</summary>
internal sealed record DeltaLoRASpec(int StartStep, double UpdateRatio);

/// <summary><c>[LayerDrop]</c>.</summary>
internal sealed record LayerDropSpec(double Probability, EnumValueSpec Schedule, EquatableArray<int>? Layers, int Seed);

/// <summary>A method other than LoRA, resolved against the model config.</summary>
/// <param name="Method">The attribute's values.</param>
/// <param name="Rows">The adapted layers or sites, or null when unknown at compile time or the method has none (prompt learning).</param>
/// <param name="TrainableParameters">Parameters the method trains, or null when only known at run time.</param>
internal sealed record MethodPlanSpec(MethodSpec Method, EquatableArray<MethodPlanRowSpec>? Rows, long? TrainableParameters);

/// <summary>
/// One row of a method's compile-time plan. VeRA: the runtime's <c>AdaptedLayer</c> (Rank r, Flag: 4-bit base); IA3: its
/// <c>IA3AdaptedLayer</c> (Flag: feed-forward); bottleneck: its <c>BottleneckSite</c> (In = Out = hidden, Rank = m).
/// </summary>
internal readonly record struct MethodPlanRowSpec(string Path, int InFeatures, int OutFeatures, int Rank, bool Flag, long TrainableParameters);
