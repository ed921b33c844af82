using System.Text.Json;
using PeftGen.Quantization;
using PeftGen.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Quantization;

/// <summary>
/// Compares with <c>tests/golden/nf4_layout.py</c>, an independent torch re-implementation of bitsandbytes' 4-bit
/// block quantization, packing and double quantization: bytes must match exactly, floats within 1e-6.
/// </summary>
public class GoldenLayoutTests(ITestOutputHelper output)
{
    private static readonly Lazy<JsonElement> Golden = new(() =>
        JsonDocument.Parse(File.ReadAllText(SharedModels.GoldenFile("nf4_layout.json"))).RootElement);

    public static TheoryData<string> Cases()
    {
        var data = new TheoryData<string>();
        foreach (var c in Golden.Value.GetProperty("cases").EnumerateArray()) data.Add(c.GetProperty("name").GetString()!);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void QuantizeReproducesTheGoldenLayout(string name)
    {
        var c = Case(name);
        int rows = c.GetProperty("rows").GetInt32(), cols = c.GetProperty("cols").GetInt32();
        var type = c.GetProperty("quant_type").GetString() == "nf4" ? QuantType.NF4 : QuantType.FP4;
        int blockSize = c.GetProperty("block_size").GetInt32();
        bool dq = c.GetProperty("double_quant").GetBoolean();
        var weight = Floats(c, "weight_f32_base64");
        var q = QuantizedWeight.Quantize(weight, rows, cols, type, blockSize, dq);

        SameBytes(Convert.FromHexString(c.GetProperty("packed_hex").GetString()!), q.PackedCodes, "packed codes");
        double worstStat;
        if (dq)
        {
            SameBytes(Convert.FromHexString(c.GetProperty("absmax_codes_hex").GetString()!), q.AbsmaxCodes, "absmax codes");
            worstStat = MaxError(Numbers(c, "absmax_scales"), q.AbsmaxScales, "absmax scales");
            worstStat = Math.Max(worstStat, MaxError([c.GetProperty("absmax_offset").GetSingle()], [q.AbsmaxOffset], "absmax offset"));
        }
        else worstStat = MaxError(Numbers(c, "absmax"), q.Absmax, "absmax");

        var expected = Floats(c, "dequantized_f32_base64");
        var actual = new float[expected.Length];
        q.Dequantize(actual);
        double worstDeq = MaxError(expected, actual, "dequantized");

        // The golden storage, loaded as is, dequantizes the same way.
        var loaded = dq
            ? QuantizedWeight.FromStorage(rows, cols, type, blockSize, Convert.FromHexString(c.GetProperty("packed_hex").GetString()!),
                Convert.FromHexString(c.GetProperty("absmax_codes_hex").GetString()!), Numbers(c, "absmax_scales"), c.GetProperty("absmax_offset").GetSingle())
            : QuantizedWeight.FromStorage(rows, cols, type, blockSize, Convert.FromHexString(c.GetProperty("packed_hex").GetString()!), Numbers(c, "absmax"));
        loaded.Dequantize(actual);
        double worstLoaded = MaxError(expected, actual, "dequantized from the golden storage");
        output.WriteLine($"{name}: {q.PackedCodes.Length} packed bytes{(dq ? $" + {q.AbsmaxCodes.Length} absmax codes" : "")} identical; " +
            $"max |Δ| block stats {worstStat:E2}, dequantized {worstDeq:E2}, dequantized from golden storage {worstLoaded:E2}");
    }

    [Fact]
    public void DynamicMapMatchesTheScriptsRebuildOfBitsandbytes()
    {
        var expected = Numbers(Golden.Value, "dynamic_map");
        double worst = MaxError(expected, DynamicMap.Signed, "signed dynamic map");
        output.WriteLine($"signed dynamic map: max |Δ| = {worst:E2}");
    }

    private static JsonElement Case(string name) =>
        Golden.Value.GetProperty("cases").EnumerateArray().First(c => c.GetProperty("name").GetString() == name);

    private static float[] Floats(JsonElement c, string property)
    {
        var bytes = Convert.FromBase64String(c.GetProperty(property).GetString()!);
        var values = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }

    private static float[] Numbers(JsonElement c, string property) =>
        c.GetProperty(property).EnumerateArray().Select(e => e.GetSingle()).ToArray();

    private static void SameBytes(byte[] expected, ReadOnlySpan<byte> actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} bytes, golden {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
            Assert.True(expected[i] == actual[i], $"{what}: byte {i} is {actual[i]:x2}, golden {expected[i]:x2}");
    }

    private static double MaxError(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} values, golden {expected.Length}");
        double worst = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs((double)expected[i] - actual[i]);
            if (err > worst)
            {
                worst = err;
                at = i;
            }
        }
        if (worst > 1e-6) Assert.Fail($"{what}: max |Δ| = {worst:E3} at {at} ({actual[at]} vs golden {expected[at]})");
        return worst;
    }
}
