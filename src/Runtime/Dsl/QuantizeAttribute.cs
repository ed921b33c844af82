using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen;

/// <summary>
/// QLoRA: store the base weights of the layers the adapters target in 4 bits (block-wise absmax quantization, the
/// bitsandbytes layout). Other layers keep their precision. The generator emits the matching
/// <see cref="Quantization.QuantizationConfig"/> and passes it to <c>PeftModel.Create</c> (or <c>VeraModel.Create</c>).
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class QuantizeAttribute : Attribute
{
    /// <summary>Quantizes adapted layers to <paramref name="type"/>.</summary>
    /// <param name="type">NF4 (QLoRA's data type, best for normally distributed weights) or FP4.</param>
    public QuantizeAttribute(QuantType type) => Type = type;

    /// <summary>The 4-bit data type.</summary>
    public QuantType Type { get; }

    /// <summary>Also quantize the per-block scales (≈0.37 bits per parameter saved); true by default, as in QLoRA.</summary>
    public bool DoubleQuant { get; set; } = true;

    /// <summary>Elements per absmax block: a power of two in 32..4096; 64 by default, as in bitsandbytes.</summary>
    public int BlockSize { get; set; } = 64;

    /// <summary>
    /// The type 4-bit weights are dequantized to for the matrix multiply. Float32 by default, the CPU backend's
    /// compute type; the CUDA backend computes in <see cref="DType.BFloat16"/>, as QLoRA does.
    /// </summary>
    public DType ComputeType { get; set; } = DType.Float32;
}
