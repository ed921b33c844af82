using System.Globalization;
using PeftGen.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Quantization;

public class CodebookTests(ITestOutputHelper output)
{
    // REFERENCE.md §2, verbatim.
    private static readonly string[] Nf4Literals =
    [
        "-1.0", "-0.6961928009986877", "-0.5250730514526367", "-0.39491748809814453", "-0.28444138169288635",
        "-0.18477343022823334", "-0.09105003625154495", "0.0", "0.07958029955625534", "0.16093020141124725",
        "0.24611230194568634", "0.33791524171829224", "0.44070982933044434", "0.5626170039176941",
        "0.7229568362236023", "1.0",
    ];

    private static readonly string[] Fp4Literals =
    [
        "0", "0.0052083", "0.6666667", "1.0", "0.3333333", "0.5", "0.1666667", "0.25",
        "-0", "-0.0052083", "-0.6666667", "-1.0", "-0.3333333", "-0.5", "-0.1666667", "-0.25",
    ];

    // The thresholds of bitsandbytes' dQuantizeNF4 / dQuantizeFP4 trees (csrc/kernels.cu), as written there.
    private static readonly string[] BnbNf4Thresholds =
    [
        "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
        "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
        "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
        "0.5016634166240692", "0.6427869200706482", "0.8614784181118011",
    ];

    private static readonly string[] BnbFp4Thresholds =
        ["0.00260417", "0.0859375", "0.20833333", "0.29166667", "0.4166667", "0.583333", "0.8333333"];

    private static float Parse(string s) => float.Parse(s, CultureInfo.InvariantCulture);

    [Fact]
    public void Nf4MatchesTheReferenceToTheLastDigit()
    {
        var nf4 = Codebooks.NF4;
        Assert.Equal(16, nf4.Length);
        double worst = 0;
        for (int i = 0; i < 16; i++)
        {
            // Each literal is a float32 printed as its shortest double: the float32 must print back identically.
            string printed = ((double)nf4[i]).ToString("R", CultureInfo.InvariantCulture);
            string expected = Nf4Literals[i].EndsWith(".0", StringComparison.Ordinal) ? Nf4Literals[i][..^2] : Nf4Literals[i];
            Assert.True(printed == expected, $"NF4[{i}] = {printed}, reference {Nf4Literals[i]}");
            worst = Math.Max(worst, Math.Abs(nf4[i] - double.Parse(Nf4Literals[i], CultureInfo.InvariantCulture)));
        }
        output.WriteLine($"NF4: max |code − literal| = {worst:E3} (float32 rounding of the literals only)");
        Assert.Equal(0f, nf4[7]);
    }

    [Fact]
    public void Fp4MatchesTheReferenceToTheLastDigit()
    {
        var fp4 = Codebooks.FP4;
        Assert.Equal(16, fp4.Length);
        double worst = 0;
        for (int i = 0; i < 16; i++)
        {
            // The reference rounds to 7 decimals: the code must round to the same digits.
            int decimals = Fp4Literals[i].Contains('.') ? Fp4Literals[i].Split('.')[1].Length : 0;
            double err = Math.Abs(fp4[i] - Parse(Fp4Literals[i]));
            worst = Math.Max(worst, err);
            Assert.True(err <= 0.5 * Math.Pow(10, -Math.Max(decimals, 1)) + 1e-9, $"FP4[{i}] = {fp4[i]:R}, reference {Fp4Literals[i]}");
            // Bit 3 is the sign: codes 8..15 mirror 0..7 exactly.
            if (i >= 8) Assert.Equal(-fp4[i - 8], fp4[i]);
        }
        // Exactly bitsandbytes' table: E2M1 magnitudes {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12 in float32.
        float[] twelfths = [0f, 0.0625f, 8f, 12f, 4f, 6f, 2f, 3f];
        for (int i = 0; i < 8; i++) Assert.Equal(twelfths[i] / 12f, fp4[i]);
        Assert.True(float.IsNegative(fp4[8]), "FP4 code 8 is -0");
        output.WriteLine($"FP4: max |code − 7-decimal literal| = {worst:E3}");
    }

    [Fact]
    public void ThresholdsAreBitsandbytesConstantsAndNearMidpoints()
    {
        double worstNf4 = 0, worstFp4 = 0;
        var nf4 = Codebooks.NF4;
        for (int i = 0; i < 15; i++)
        {
            Assert.Equal(Parse(BnbNf4Thresholds[i]), Codebooks.NF4Thresholds[i]);
            worstNf4 = Math.Max(worstNf4, Math.Abs(Codebooks.NF4Thresholds[i] - ((double)nf4[i] + nf4[i + 1]) / 2));
        }
        double[] magnitudes = [0, 1 / 192.0, 1 / 6.0, 1 / 4.0, 1 / 3.0, 1 / 2.0, 2 / 3.0, 1];
        for (int i = 0; i < 7; i++)
        {
            Assert.Equal(Parse(BnbFp4Thresholds[i]), Codebooks.FP4MagnitudeThresholds[i]);
            worstFp4 = Math.Max(worstFp4, Math.Abs(Codebooks.FP4MagnitudeThresholds[i] - (magnitudes[i] + magnitudes[i + 1]) / 2));
        }
        output.WriteLine($"max |threshold − exact midpoint|: NF4 {worstNf4:E3}, FP4 {worstFp4:E3}");
        Assert.True(worstNf4 < 6e-8, $"NF4 thresholds are midpoints to within a float32 ulp: {worstNf4:E3}");
        Assert.True(worstFp4 < 1e-6, $"FP4 thresholds are decimal midpoints: {worstFp4:E3}");
    }

    [Fact]
    public void Nf4RoundsToNearestWithTiesToTheLowerCode()
    {
        var t = Codebooks.NF4Thresholds;
        for (int i = 0; i < 15; i++)
        {
            Assert.Equal(i, Codebooks.EncodeNF4(MathF.BitDecrement(t[i])));
            Assert.Equal(i, Codebooks.EncodeNF4(t[i]));                          // exactly on it: lower code
            Assert.Equal(i + 1, Codebooks.EncodeNF4(MathF.BitIncrement(t[i])));
        }
        for (int c = 0; c < 16; c++) Assert.Equal(c, Codebooks.EncodeNF4(Codebooks.NF4[c]));
        Assert.Equal(0, Codebooks.EncodeNF4(-1.5f));
        Assert.Equal(15, Codebooks.EncodeNF4(1.0000001f));
        Assert.Equal(0, Codebooks.EncodeNF4(float.NaN));                        // bitsandbytes' all-zero-block path
        Assert.Equal(7, Codebooks.EncodeNF4(-0f));
        double worst = NearestViolation(QuantType.NF4);
        output.WriteLine($"NF4 on a 1e-5 grid over [-1, 1]: worst |x − chosen| − |x − nearest| = {worst:E3}");
        Assert.True(worst < 1e-7, $"NF4 picks a non-nearest code by {worst:E3} (only float32 rounding of a midpoint is allowed)");
    }

    [Fact]
    public void Fp4RoundsToNearestWithTiesToTheSmallerMagnitude()
    {
        var t = Codebooks.FP4MagnitudeThresholds;
        var fp4 = Codebooks.FP4;
        for (int i = 0; i < 7; i++)
        {
            foreach (float sign in new[] { 1f, -1f })
            {
                float below = Magnitude(Codebooks.EncodeFP4(sign * MathF.BitDecrement(t[i])));
                float at = Magnitude(Codebooks.EncodeFP4(sign * t[i]));
                float above = Magnitude(Codebooks.EncodeFP4(sign * MathF.BitIncrement(t[i])));
                Assert.True(below < above && at == below,
                    $"threshold {i} (sign {sign}): below → {below}, at → {at}, above → {above}");
                Assert.Equal(sign < 0, (Codebooks.EncodeFP4(sign * t[i]) & 8) != 0); // sign bit: x < 0
            }
        }
        for (int c = 0; c < 16; c++)
            if (c != 8) Assert.Equal(c, Codebooks.EncodeFP4(fp4[c]));
        Assert.Equal(0, Codebooks.EncodeFP4(-0f));                               // x < 0 is false for -0
        Assert.Equal(0, Codebooks.EncodeFP4(float.NaN));
        Assert.Equal(0b1011, Codebooks.EncodeFP4(-1.5f));
        double worst = NearestViolation(QuantType.FP4);
        output.WriteLine($"FP4 on a 1e-5 grid over [-1, 1]: worst |x − chosen| − |x − nearest| = {worst:E3} (bitsandbytes' decimal thresholds)");
        Assert.True(worst < 1e-6, $"FP4 picks a non-nearest code by {worst:E3}");
    }

    private static float Magnitude(byte code) => MathF.Abs(Codebooks.FP4[code]);

    /// <summary>Largest excess distance of the chosen code over the nearest one, on a fine grid.</summary>
    private static double NearestViolation(QuantType type)
    {
        var values = Codebooks.Values(type);
        double worst = 0;
        for (int k = -100_000; k <= 100_000; k++)
        {
            float x = k * 1e-5f;
            double chosen = Math.Abs(x - values[Codebooks.Encode(x, type)]);
            double nearest = double.MaxValue;
            foreach (float v in values) nearest = Math.Min(nearest, Math.Abs(x - v));
            worst = Math.Max(worst, chosen - nearest);
        }
        return worst;
    }
}
