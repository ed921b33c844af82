namespace PeftGen.Data;

/// <summary>
/// Permutations that depend only on a seed and a stream number, the same on every platform and .NET version
/// (unlike <see cref="Random"/> without a seed or <see cref="HashCode"/>, which are randomized per process).
/// </summary>
internal static class SeededShuffle
{
    /// <summary>A Fisher-Yates permutation of 0..count-1 driven by SplitMix64 over (seed, stream).</summary>
    public static int[] Permutation(int count, ulong seed, ulong stream)
    {
        var order = new int[count];
        for (int i = 0; i < count; i++)
        {
            order[i] = i;
        }
        ulong state = seed * 0x9E3779B97F4A7C15UL ^ (stream + 1) * 0xD1B54A32D192ED03UL;
        for (int i = count - 1; i > 0; i--)
        {
            // Multiply-shift maps 64 random bits onto 0..i with a bias far below anything observable here.
            int j = (int)(((UInt128)Next(ref state) * (ulong)(i + 1)) >> 64);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    private static ulong Next(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
