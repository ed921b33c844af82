namespace PeftGen.Quantization;

/// <summary>
/// The 16-value code books of the 4-bit data types and their nearest-code encoders, bit-compatible with
/// bitsandbytes (its CUDA kernels <c>dQuantizeNF4</c> / <c>dQuantizeFP4</c> and lookup tables).
/// </summary>
/// <remarks>
/// Encoding compares a normalised value x (a weight times 1 / its block's absmax) against the decision thresholds
/// between adjacent codes and takes the upper code only when x is strictly greater than the threshold, so a value
/// exactly on a threshold gets the lower code (NF4) or the smaller magnitude (FP4). That is bitsandbytes' rule:
/// its kernels are 4-level binary trees of <c>if (x &gt; threshold)</c> over the same thresholds, and a binary
/// search over sorted thresholds returns the number of thresholds strictly below x, which is what
/// <see cref="Encode(float, QuantType)"/> computes. NaN is above no threshold and encodes to code 0 (bitsandbytes
/// turns an all-zero block into NaNs via 0 · (1 / 0); code 0 times absmax 0 still dequantizes to 0).
/// </remarks>
internal static class Codebooks
{
    // NF4 in code order 0..15 (QLoRA's values, exactly as bitsandbytes' float32 lookup table holds them).
    private static readonly float[] s_nf4 =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    // FP4 in bit-pattern order: bit 3 is the sign, bits 0..2 pick a magnitude of {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12
    // (the E2M1 values with bitsandbytes' bias; 0.0625 is its subnormal). Each is the float32 nearest k / 12,
    // identical to bitsandbytes' literals (0.66666667f, 5.208333333e-03f, ...).
    private static readonly float[] s_fp4 =
    [
        0f, 0.0625f / 12, 8f / 12, 1f, 4f / 12, 6f / 12, 2f / 12, 3f / 12,
        -0f, -0.0625f / 12, -8f / 12, -1f, -4f / 12, -6f / 12, -2f / 12, -3f / 12,
    ];

    // threshold[i] separates NF4 codes i and i + 1: bitsandbytes' dQuantizeNF4 constants verbatim, each the exact
    // (double) midpoint printed to 16-17 digits and compiled as a float literal. The midpoint of two float32 values
    // is often exactly halfway between two float32 values, so rounding the printed decimal can land on either side:
    // thresholds 0, 8, 12 and 14 are one ulp away from the float32-rounded exact midpoint. Bit-compatibility means
    // using the compiled constants; C# float literals round a decimal exactly as nvcc does.
    private static readonly float[] s_nf4Thresholds =
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    // Thresholds between the ascending FP4 magnitudes 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1: bitsandbytes'
    // dQuantizeFP4 constants verbatim. They are the midpoints rounded to a few decimals (7/12 is written 0.583333,
    // 3.3e-7 below the exact midpoint), so five of the seven differ from the float32-rounded midpoints.
    private static readonly float[] s_fp4MagnitudeThresholds =
        [0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f];

    // Bit pattern (without sign) of each FP4 magnitude bin, in ascending order of magnitude.
    private static readonly byte[] s_fp4BitsByBin = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

    /// <summary>NF4 values by code, 0..15, ascending from -1 to 1; code 7 is exactly 0.</summary>
    public static ReadOnlySpan<float> NF4 => s_nf4;

    /// <summary>FP4 values by code (bit pattern) 0..15; bit 3 is the sign, so codes 8..15 mirror 0..7 (code 8 is -0).</summary>
    public static ReadOnlySpan<float> FP4 => s_fp4;

    /// <summary>The 15 NF4 decision thresholds: element i separates codes i and i + 1 (their midpoint, within one float32 ulp).</summary>
    public static ReadOnlySpan<float> NF4Thresholds => s_nf4Thresholds;

    /// <summary>
    /// The 7 FP4 magnitude thresholds in ascending order (bitsandbytes' constants): element i separates the i-th and
    /// (i + 1)-th smallest magnitudes 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1.
    /// </summary>
    public static ReadOnlySpan<float> FP4MagnitudeThresholds => s_fp4MagnitudeThresholds;

    /// <summary>The code book of <paramref name="type"/>: 16 values indexed by code.</summary>
    public static ReadOnlySpan<float> Values(QuantType type) => type switch
    {
        QuantType.NF4 => s_nf4,
        QuantType.FP4 => s_fp4,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown 4-bit quantization type."),
    };

    /// <summary>
    /// The nearest code (0..15) of a normalised value (ideally in [-1, 1]; values beyond give the extreme codes).
    /// A value exactly on a threshold gets the lower NF4 code or the smaller FP4 magnitude, as in bitsandbytes.
    /// </summary>
    public static byte Encode(float normalized, QuantType type) => type switch
    {
        QuantType.NF4 => EncodeNF4(normalized),
        QuantType.FP4 => EncodeFP4(normalized),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown 4-bit quantization type."),
    };

    /// <summary>NF4 code of <paramref name="x"/>: the number of NF4 thresholds strictly below it.</summary>
    public static byte EncodeNF4(float x)
    {
        // Binary search over the 15 sorted thresholds (bitsandbytes' tree: first split at threshold 7).
        int code = 0;
        for (int step = 8; step > 0; step >>= 1)
            if (x > s_nf4Thresholds[code + step - 1]) code += step;
        return (byte)code;
    }

    /// <summary>FP4 code of <paramref name="x"/>: sign bit when x &lt; 0 (so -0 and NaN are positive), then the magnitude bin.</summary>
    public static byte EncodeFP4(float x)
    {
        int sign = x < 0 ? 0b1000 : 0;
        float magnitude = MathF.Abs(x);
        int bin = 0;
        for (int step = 4; step > 0; step >>= 1)
            if (magnitude > s_fp4MagnitudeThresholds[bin + step - 1]) bin += step;
        return (byte)(s_fp4BitsByBin[bin] | sign);
    }
}
