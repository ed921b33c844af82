namespace PeftGen.Generation;

/// <summary>Picks the next token from logits: greedy, temperature, or nucleus (top-p) sampling.</summary>
internal sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly Random _random;
    private (int Index, float Prob)[] _candidates = [];

    public Sampler(SamplingOptions options)
    {
        _options = options;
        _random = new Random(options.Seed);
    }

    /// <summary>Chooses a token; <paramref name="logits"/> [vocab] is overwritten with probabilities.</summary>
    /// <exception cref="InvalidDataException">The logits hold NaN or infinity (non-finite model or adapter weights, or an overflow).</exception>
    public int Next(Span<float> logits)
    {
        int bad = IndexOfNonFinite(logits);
        if (bad >= 0)
            throw new InvalidDataException(
                $"The model produced a non-finite score ({logits[bad]}) for token {bad}: its weights or the adapter's hold NaN or infinite values, "
                + "or a value overflowed. Check the model and adapter (peftgen inspect) or use an earlier checkpoint.");
        if (_options.Temperature == 0f) return ArgMax(logits);
        int best = ArgMax(logits);
        for (int i = 0; i < logits.Length; i++) logits[i] /= _options.Temperature;
        if (float.IsInfinity(logits[best])) return best; // a temperature so small that dividing overflows is greedy decoding
        Softmax(logits);
        float coin = _random.NextSingle();
        return _options.TopP >= 1f ? SampleAll(logits, coin) : SampleTopP(logits, _options.TopP, coin);
    }

    private static int IndexOfNonFinite(ReadOnlySpan<float> v)
    {
        for (int i = 0; i < v.Length; i++) if (!float.IsFinite(v[i])) return i;
        return -1;
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private static void Softmax(Span<float> v)
    {
        float max = float.NegativeInfinity;
        foreach (float x in v) max = Math.Max(max, x);
        double sum = 0;
        for (int i = 0; i < v.Length; i++) sum += v[i] = MathF.Exp(v[i] - max);
        for (int i = 0; i < v.Length; i++) v[i] = (float)(v[i] / sum);
    }

    private static int SampleAll(ReadOnlySpan<float> probs, float coin)
    {
        float cdf = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            cdf += probs[i];
            if (coin < cdf) return i;
        }
        return probs.Length - 1; // rounding left the total just under 1
    }

    private int SampleTopP(ReadOnlySpan<float> probs, float topP, float coin)
    {
        // Tokens below (1 - p) / (n - 1) cannot be in the nucleus; dropping them first keeps the sort short.
        float cutoff = (1f - topP) / (probs.Length - 1);
        if (_candidates.Length < probs.Length) _candidates = new (int, float)[probs.Length];
        int n = 0;
        for (int i = 0; i < probs.Length; i++)
            if (probs[i] >= cutoff) _candidates[n++] = (i, probs[i]);
        var candidates = _candidates.AsSpan(0, n);
        candidates.Sort((a, b) => b.Prob.CompareTo(a.Prob));
        float mass = 0;
        int last = n - 1;
        for (int i = 0; i < n; i++)
        {
            mass += candidates[i].Prob;
            if (mass > topP)
            {
                last = i;
                break;
            }
        }
        float r = coin * mass, cdf = 0;
        for (int i = 0; i <= last; i++)
        {
            cdf += candidates[i].Prob;
            if (r < cdf) return candidates[i].Index;
        }
        return candidates[last].Index;
    }
}
