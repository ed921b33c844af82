using System;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>The class-level attributes that go with a PEFT method; a method says which of them it works with.</summary>
[Flags]
internal enum Companion
{
    None = 0,
    Quantize = 1,
    LoRAPlus = 2,
    ModelConfig = 4,
    DeltaLoRA = 8,
    LayerDrop = 16,
    LayerwiseLearningRate = 32,

    /// <summary>The companions every method works with.</summary>
    Common = ModelConfig | LayerDrop,
}

/// <summary>Reads the companion attributes, each with its attribute's defaults.</summary>
internal static class Companions
{
    /// <summary>The companion whose attribute class is <paramref name="className"/> (a <c>PeftGen</c> type), or <see cref="Companion.None"/>.</summary>
    public static Companion Of(string className) => className switch
    {
        "QuantizeAttribute" => Companion.Quantize,
        "LoRAPlusAttribute" => Companion.LoRAPlus,
        "ModelConfigAttribute" => Companion.ModelConfig,
        "DeltaLoRAAttribute" => Companion.DeltaLoRA,
        "LayerDropAttribute" => Companion.LayerDrop,
        "LayerwiseLearningRateAttribute" => Companion.LayerwiseLearningRate,
        _ => Companion.None,
    };

    /// <summary>The spec with the values of companion <paramref name="kind"/> set from <paramref name="v"/>.</summary>
    public static CompanionsSpec With(this CompanionsSpec spec, Companion kind, AttributeValues v) => kind switch
    {
        Companion.Quantize => spec with
        {
            Quantize = new QuantizeSpec(
                v.Enum("type", "PeftGen.Quantization.QuantType", 0), v.Bool("DoubleQuant", true), v.Int("BlockSize", 64),
                v.Enum("ComputeType", "PeftGen.Tensors.DType", 0)),
        },
        Companion.LoRAPlus => spec with { LoRAPlusRatio = v.Double("ratio") },
        Companion.ModelConfig => spec with { ModelConfigPath = v.String("path") },
        Companion.DeltaLoRA => spec with { DeltaLoRA = new DeltaLoRASpec(v.Int("StartStep", 500), v.Double("UpdateRatio", 2)) },
        Companion.LayerDrop => spec with
        {
            LayerDrop = new LayerDropSpec(v.Double("Probability", 0), v.Enum("Schedule", "PeftGen.Methods.LayerDrop.LayerDropSchedule", 0), v.Ints("Layers"), v.Int("Seed")),
        },
        Companion.LayerwiseLearningRate => spec with { LayerwiseDecay = v.Double("Decay", 1) },
        _ => spec,
    };
}
