using PeftGen.Methods.DeltaLoRA;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>The rules for combining LoRA's variants (LoRA-FA, Delta-LoRA, DoRA, dropout, 4-bit bases).</summary>
internal static class LoRAVariants
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the first combination that cannot work.</summary>
    public static void Validate(LoRAConfig config)
    {
        if (config.LoRAFAGradientCorrection && !config.UseLoRAFA)
            throw new ArgumentException("LoRAFAGradientCorrection corrects the gradient of B when A is frozen: it needs UseLoRAFA = true.", nameof(config));
        if (config.UseLoRAFA && config.UseDoRA)
            throw new ArgumentException("LoRA-FA cannot be combined with DoRA: DoRA's backward needs the input x that LoRA-FA avoids keeping. Set UseLoRAFA or UseDoRA, not both.", nameof(config));
        if (config.DeltaLoRA is not { } delta) return;
        delta.Validate();
        if (config.UseDoRA)
            throw new ArgumentException("Delta-LoRA cannot be combined with DoRA: DoRA renormalises W0 + s·B·A per row, so moving W by the change of s·B·A no longer follows the update. Use one of them.", nameof(config));
        if (config.UseLoRAFA)
            throw new ArgumentException("Delta-LoRA cannot be combined with LoRA-FA: PeftGen supports each on its own. Set UseLoRAFA = false or DeltaLoRA = null.", nameof(config));
        if (config.Dropout != 0)
            throw new ArgumentException($"Delta-LoRA trains without dropout on the LoRA path (the paper's rule, so that the base moves by the update the loss saw); set Dropout = 0 (got {config.Dropout}).", nameof(config));
    }

    /// <summary>Refuses Delta-LoRA on a base that cannot absorb its updates.</summary>
    public static void CheckBase(LoRAConfig config, QuantizationConfig? quantization, string path, LinearBase baseLayer)
    {
        if (config.DeltaLoRA == null) return;
        if (quantization != null || baseLayer is Linear4Bit)
            throw new ArgumentException(
                $"Delta-LoRA updates the base weight of '{path}' after every step, but that base is stored 4-bit: the updates (≈ λ·s·ΔBA) are far below " +
                "one quantization step and re-quantizing would round them away. PeftGen refuses this combination: load a float32 base without " +
                "QuantizationConfig, or use plain LoRA (QLoRA) on the 4-bit base.", nameof(config));
        if (baseLayer is not Linear linear)
            throw new ArgumentException($"Delta-LoRA needs a float Linear base to update; '{path}' is a {baseLayer.GetType().Name}.", nameof(config));
        if (linear.Weight.DType != DType.Float32)
            throw new ArgumentException(
                $"Delta-LoRA updates the base weight of '{path}' after every step, but that base is stored {linear.Weight.DType}: updates of ≈ λ·s·ΔBA " +
                "are mostly below one 16-bit rounding step and would be lost. Keep Delta-LoRA bases in float32 (load them as float32), or use plain LoRA " +
                "on the 16-bit base.", nameof(config));
    }
}
