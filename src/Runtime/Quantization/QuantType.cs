namespace PeftGen.Quantization;

/// <summary>The 4-bit data type of a <see cref="QuantizedWeight"/> (bitsandbytes' <c>quant_type</c>).</summary>
public enum QuantType
{
    /// <summary>
    /// NormalFloat4 (QLoRA): 16 values at quantiles of a standard normal, scaled to [-1, 1], with an exact 0.
    /// The better choice for normally distributed weights; bitsandbytes' <c>"nf4"</c>.
    /// </summary>
    NF4,

    /// <summary>
    /// 4-bit float E2M1 (1 sign, 2 exponent, 1 mantissa bit, bitsandbytes' bias and subnormal), divided by its
    /// maximum 12 so it spans [-1, 1]; bitsandbytes' <c>"fp4"</c>.
    /// </summary>
    FP4,
}
