using PeftGen.Models.Llama;
using PeftGen.Quantization;

namespace PeftGen.Samples.QuickStart;

/// <summary>
/// The QuickStart's model, declared with the PeftGen DSL: a tiny Llama whose shapes come from digits-config.json, and
/// the QLoRA adapter to put on it. The source generator reads the attributes and the config (an AdditionalFile) and
/// emits <c>LoRAConfig</c>, <c>QuantizationConfig</c>, <c>LoRAPlusRatio</c>, the compile-time <c>AdapterPlan</c> with its
/// <c>TrainableParameterCount</c>, <c>ApplyAdapters()</c>, and the <c>IDeclaredTraining</c> implementation through which every
/// trainer of the adapted model (the QuickStart's <c>FineTuneSession</c>) trains with the LoRA+ ratio.
/// </summary>
[LoRA(rank: 8, alpha: 16, targets: "all-linear", Seed = 7)]
[Quantize(QuantType.NF4, DoubleQuant = true, BlockSize = 64)]
[LoRAPlus(4)]
[ModelConfig(ConfigFile)]
public partial class DigitCounter : LlamaForCausalLM
{
    /// <summary>The config the generator plans with at compile time; copied beside the program, the model is built from it too.</summary>
    public const string ConfigFile = "digits-config.json";

    /// <summary>A freshly initialised model with the shapes of <see cref="ConfigFile"/>.</summary>
    public DigitCounter()
        : base(LlamaConfig.Load(Path.Combine(AppContext.BaseDirectory, ConfigFile)), seed: 42)
    {
    }
}
