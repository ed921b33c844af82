namespace PeftGen.Backends.Cuda;

/// <summary>
/// The dropout mask the GPU draws (<c>peft_dropout_mask_f32</c>), as a host function for tests and for the emulated
/// device: element i of a mask drawn with <c>seed</c> is a pure function of (seed, i), so a mask needs one 64-bit seed
/// from the run's <see cref="Tensors.Rng"/> per call rather than one host draw and an upload per element.
/// </summary>
internal static class CudaDropout
{
    /// <summary>The uniform number in [0, 1) (24 bits) of element <paramref name="index"/>: the SplitMix64 finaliser of seed + (i + 1)·φ·2⁶⁴.</summary>
    public static float Uniform(ulong seed, long index)
    {
        ulong z = unchecked(seed + (ulong)(index + 1) * 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return (uint)(z >> 40) * (1f / 16777216f);
    }

    /// <summary>Mask element <paramref name="index"/>: 0 with probability <paramref name="p"/>, else <paramref name="keep"/>.</summary>
    public static float MaskValue(ulong seed, long index, float p, float keep) => Uniform(seed, index) < p ? 0f : keep;

    /// <summary>Fills <paramref name="mask"/> as the kernel does.</summary>
    public static void Fill(Span<float> mask, float p, float keep, ulong seed)
    {
        for (int i = 0; i < mask.Length; i++) mask[i] = MaskValue(seed, i, p, keep);
    }
}
