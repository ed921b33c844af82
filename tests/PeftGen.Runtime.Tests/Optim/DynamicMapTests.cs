using PeftGen.Quantization;
using Xunit;

namespace PeftGen.Tests.Optim;

public class DynamicMapTests
{
    [Fact]
    public void Maps_hold_256_strictly_ascending_values_with_bitsandbytes_end_points()
    {
        foreach (var (name, map) in new[] { ("signed", DynamicMap.Signed.ToArray()), ("unsigned", DynamicMap.Unsigned.ToArray()) })
        {
            Assert.Equal(256, map.Length);
            float worstStep = float.MaxValue;
            for (int i = 1; i < map.Length; i++) worstStep = MathF.Min(worstStep, map[i] - map[i - 1]);
            Assert.True(worstStep > 0, $"{name} map is not strictly ascending: smallest step {worstStep:E3}");
            Assert.Equal(1f, map[255]);
        }
        var signed = DynamicMap.Signed;
        var unsigned = DynamicMap.Unsigned;
        Assert.Equal(0f, signed[DynamicMap.SignedZeroCode]);
        Assert.Equal(0f, unsigned[0]);
        // bitsandbytes appends +1 but not −1, so the signed map starts at the mirror of its largest midpoint,
        // 1 − 0.9/128; its smallest magnitudes are the midpoints (0.1 + 1)/2 · 1e-6 and (0.1 + 0.55)/2 · 1e-6.
        Assert.Equal(-0.99296875f, signed[0], 6);
        Assert.Equal(5.5e-7f, signed[DynamicMap.SignedZeroCode + 1], 12);
        Assert.Equal(3.25e-7f, unsigned[1], 12);
    }

    [Fact]
    public void Signed_map_is_symmetric_apart_from_its_top_entry()
    {
        var map = DynamicMap.Signed;
        float worst = 0;
        for (int i = 0; i <= 254; i++) worst = MathF.Max(worst, MathF.Abs(map[i] + map[254 - i]));
        Assert.True(worst == 0, $"largest |map[i] + map[254 − i]| = {worst:E3}");
    }

    [Fact]
    public void Encode_returns_the_nearest_value_and_every_map_value_encodes_to_itself()
    {
        foreach (var map in new[] { DynamicMap.Signed.ToArray(), DynamicMap.Unsigned.ToArray() })
        {
            for (int j = 0; j < map.Length; j++) Assert.Equal(j, DynamicMap.Encode(map[j], map));
            var random = new Random(7);
            double worstExcess = 0;
            for (int t = 0; t < 50_000; t++)
            {
                // Log-uniform magnitudes exercise every decade of the map, not only the top one.
                float x = (float)(Math.Pow(10, -8 * random.NextDouble()) * (random.Next(2) == 0 ? -1 : 1));
                byte code = DynamicMap.Encode(x, map);
                float clamped = Math.Clamp(x, -1f, 1f);
                double best = map.Min(v => Math.Abs((double)v - clamped));
                worstExcess = Math.Max(worstExcess, Math.Abs((double)map[code] - clamped) - best);
            }
            // The boundary is the float32 midpoint, which can sit half an ulp off the exact one.
            Assert.True(worstExcess <= 6e-8, $"largest distance beyond the nearest value = {worstExcess:E3}");
        }
    }

    [Fact]
    public void Table_encoding_of_the_built_in_maps_matches_the_binary_search()
    {
        // Encode takes a lookup-table path for DynamicMap.Signed / Unsigned themselves and a binary search for
        // any other span, such as a copy of them.
        foreach (bool signed in new[] { true, false })
        {
            var builtIn = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
            float[] copy = builtIn.ToArray();
            var probes = new List<float> { 0f, -0f, 1f, -1f, 2f, -2f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, float.Epsilon, -float.Epsilon };
            for (int j = 0; j < copy.Length; j++)
            {
                float midpoint = j + 1 < copy.Length ? (copy[j] + copy[j + 1]) * 0.5f : copy[j];
                foreach (float v in new[] { copy[j], midpoint })
                    for (int ulps = -2; ulps <= 2; ulps++)
                        probes.Add(BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) + ulps));
            }
            var random = new Random(5);
            for (int t = 0; t < 200_000; t++)
                probes.Add(BitConverter.Int32BitsToSingle(random.Next(int.MinValue, int.MaxValue)));
            int mismatches = 0;
            float worstAt = 0;
            foreach (float x in probes)
            {
                if (DynamicMap.Encode(x, builtIn) == DynamicMap.Encode(x, copy)) continue;
                mismatches++;
                worstAt = x;
            }
            Assert.True(mismatches == 0, $"{(signed ? "signed" : "unsigned")}: {mismatches} of {probes.Count} values encode differently, e.g. {worstAt:R}");
        }
    }

    [Fact]
    public void Encode_clamps_and_breaks_ties_toward_the_smaller_magnitude()
    {
        var signed = DynamicMap.Signed;
        var unsigned = DynamicMap.Unsigned;
        Assert.Equal(255, DynamicMap.Encode(3f, signed));
        Assert.Equal(0, DynamicMap.Encode(-3f, signed));
        Assert.Equal(0, DynamicMap.Encode(-0.5f, unsigned));
        Assert.Equal(0, DynamicMap.Encode(float.NaN, signed));
        int mismatches = 0;
        for (int j = 0; j < 254; j++)
        {
            float tie = (signed[j] + signed[j + 1]) * 0.5f;
            int expected = MathF.Abs(signed[j]) <= MathF.Abs(signed[j + 1]) ? j : j + 1;
            if (DynamicMap.Encode(tie, signed) != expected) mismatches++;
            // Ties toward zero make encoding commute with negation (below the unmirrored top entry).
            if (DynamicMap.Encode(-tie, signed) != 254 - DynamicMap.Encode(tie, signed)) mismatches++;
        }
        Assert.True(mismatches == 0, $"{mismatches} midpoints were not resolved toward the smaller magnitude");
    }

    [Fact]
    public void Blockwise_round_trip_error_is_at_most_half_a_map_step_of_the_block_scale()
    {
        const int n = 10_000, blockSize = 256; // the last block holds 16 elements
        var random = new Random(11);
        foreach (bool signedData in new[] { true, false })
        {
            var map = signedData ? DynamicMap.Signed.ToArray() : DynamicMap.Unsigned.ToArray();
            var x = new float[n];
            for (int i = 0; i < n; i++)
            {
                float magnitude = (float)Math.Exp(random.NextDouble() * 6 - 4);
                x[i] = signedData && random.Next(2) == 0 ? -magnitude : magnitude;
            }
            x.AsSpan(512, blockSize).Clear(); // an all-zero block must come back as zeros
            int blocks = DynamicMap.BlockCount(n, blockSize);
            var codes = new byte[n];
            var absmax = new float[blocks];
            var back = new float[n];
            DynamicMap.QuantizeBlockwise(x, codes, absmax, blockSize, map);
            DynamicMap.DequantizeBlockwise(codes, absmax, back, blockSize, map);

            // Half the widest gap between neighbouring codes, including the gap from −1 up to the first code.
            double halfStep = (map[0] + 1.0) * (signedData ? 1 : 0);
            for (int j = 1; j < map.Length; j++) halfStep = Math.Max(halfStep, (map[j] - map[j - 1]) / 2.0);
            double worst = 0;
            for (int i = 0; i < n; i++)
            {
                float scale = absmax[i / blockSize];
                double error = Math.Abs(back[i] - x[i]);
                worst = Math.Max(worst, scale == 0 ? error : error / scale);
            }
            Assert.True(worst <= halfStep * (1 + 1e-5), $"largest |error| / absmax = {worst:E4}, bound {halfStep:E4}");
            Assert.Equal(0f, absmax[2]);
        }
    }

    [Fact]
    public void Blockwise_helpers_reject_mismatched_buffers_naming_them()
    {
        var x = new float[300];
        var e = Assert.Throws<ArgumentException>(() =>
            DynamicMap.QuantizeBlockwise(x, new byte[300], new float[1], 256, DynamicMap.Signed));
        Assert.Equal("absmax", e.ParamName);
        Assert.Contains("need 2", e.Message);
        var size = Assert.Throws<ArgumentOutOfRangeException>(() =>
            DynamicMap.DequantizeBlockwise(new byte[300], new float[2], x, 0, DynamicMap.Signed));
        Assert.Equal("blockSize", size.ParamName);
    }
}
