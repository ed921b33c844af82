namespace PeftGen.Quantization;

/// <summary>How QLoRA stores the base weights of adapted layers (and how the model loader quantizes them while reading).</summary>
/// <param name="Type">NF4 (QLoRA's data type) or FP4.</param>
/// <param name="DoubleQuant">Quantize the block scales too (≈0.37 bits/param saved).</param>
/// <param name="BlockSize">Elements per absmax block, a power of two in 32..4096.</param>
public sealed record QuantizationConfig(QuantType Type = QuantType.NF4, bool DoubleQuant = true, int BlockSize = 64);
