using PeftGen.Autograd;
using PeftGen.Models.Llama;
using PeftGen.Optim;
using PeftGen.Tensors;
using PeftGen.Text;

namespace PeftGen.Tests.Methods.PromptLearning;

/// <summary>Shared pieces of the IA3 and prompt-learning tests: a tiny model, logits, a synthetic task, a toy tokenizer.</summary>
internal static class PromptTuningSupport
{
    /// <summary>2 layers, 4 heads over 2 kv heads (GQA), hidden 32, vocab 16, context 24.</summary>
    public static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 16, MaxPositionEmbeddings = 24, TieWordEmbeddings = false,
    };

    public static readonly int[] Ids = [1, 5, 7, 3, 9, 2, 4, 8];

    public static float[] Logits(LlamaForCausalLM model, int[] ids, int batch, int time)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        return model.Forward(ids, batch, time).ToArray();
    }

    public static float MaxDiff(float[] a, float[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} vs {b.Length}");
        return a.Zip(b, (x, y) => MathF.Abs(x - y)).Max();
    }

    public static void Fill(Tensor t, Random random, float scale)
    {
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = (float)(random.NextGaussian() * scale);
    }

    /// <summary>
    /// Trains <paramref name="parameters"/> on "next token = (3·token + 1) mod 16" for <paramref name="steps"/> AdamW
    /// steps and returns the first and last loss.
    /// </summary>
    public static (float First, float Last) Train(LlamaForCausalLM model, IEnumerable<Tensor> parameters, int steps, float learningRate)
    {
        var random = new Random(3);
        int batch = 4, time = 6;
        var inputs = Enumerable.Range(0, batch * time).Select(_ => random.Next(16)).ToArray();
        var targets = inputs.Select(i => (3 * i + 1) % 16).ToArray();
        using var optimizer = new AdamW(parameters.ToList(), learningRate, weightDecay: 0f);
        float first = float.NaN, last = float.NaN;
        for (int step = 0; step < steps; step++)
        {
            using var scope = TensorScope.Begin();
            var loss = model.Loss(inputs, targets, batch, time);
            last = loss.Item();
            if (step == 0) first = last;
            loss.Backward();
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        return (first, last);
    }

    /// <summary>Greedy continuation by full forward passes without a cache (the reference for KV-cache generation).</summary>
    public static int[] GreedyWithoutCache(LlamaForCausalLM model, int[] prompt, int newTokens)
    {
        var ids = prompt.ToList();
        for (int i = 0; i < newTokens; i++)
        {
            var logits = Logits(model, ids.ToArray(), 1, ids.Count);
            var last = logits.AsSpan(logits.Length - 16, 16);
            int best = 0;
            for (int v = 1; v < 16; v++) if (last[v] > last[best]) best = v;
            ids.Add(best);
        }
        return ids.ToArray();
    }
}

/// <summary>A toy tokenizer over 16 ids: BOS 1, EOS 2, and each letter a..m maps to id 3 + (letter − 'a').</summary>
internal sealed class ToyTokenizer : ITokenizer
{
    public int VocabSize => 16;

    public int BosId => 1;

    public int EosId => 2;

    public int[] Encode(string text, bool addBos = true, bool addEos = false)
    {
        var ids = new List<int>();
        if (addBos) ids.Add(BosId);
        ids.AddRange(text.Where(c => c is >= 'a' and <= 'm').Select(c => 3 + (c - 'a')));
        if (addEos) ids.Add(EosId);
        return ids.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids) => new(ids.ToArray().Where(i => i >= 3).Select(i => (char)('a' + i - 3)).ToArray());
}
