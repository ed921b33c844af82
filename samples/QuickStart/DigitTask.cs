using PeftGen.Autograd;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Training;

namespace PeftGen.Samples.QuickStart;

/// <summary>Arithmetic progressions of digits modulo 10: s, s+k, s+2k, … with the step k drawn per sequence.</summary>
internal sealed class DigitTask(int seed)
{
    /// <summary>The ten digits are the whole vocabulary.</summary>
    public const int VocabSize = 10;

    private readonly Random _random = new(seed);

    /// <summary>A batch of sequences; the model predicts every next digit (the first two digits define the step).</summary>
    public Batch NextBatch(int batchSize, int length)
    {
        var inputs = new int[batchSize * length];
        var targets = new int[batchSize * length];
        for (int b = 0; b < batchSize; b++)
        {
            int start = _random.Next(10), step = _random.Next(1, 10);
            for (int t = 0; t < length; t++)
            {
                inputs[b * length + t] = (start + t * step) % 10;
                // The digit after position 0 is unpredictable (it fixes the step), so it is not scored.
                targets[b * length + t] = t == 0 ? -100 : (start + (t + 1) * step) % 10;
            }
        }
        return new Batch(inputs, targets, batchSize, length);
    }

    /// <summary>The correct continuation of a two-digit prompt.</summary>
    public static IEnumerable<int> Expected(int[] prompt, int count)
    {
        int step = ((prompt[1] - prompt[0]) % 10 + 10) % 10;
        return Enumerable.Range(prompt.Length, count).Select(t => (prompt[0] + t * step) % 10);
    }

    /// <summary>Greedy continuation by <paramref name="count"/> digits.</summary>
    public static int[] Complete(LlamaForCausalLM model, int[] prompt, int count)
    {
        var ids = new List<int>(prompt);
        using var noGrad = GradMode.Disable();
        for (int i = 0; i < count; i++)
        {
            using var scope = TensorScope.Begin();
            var logits = model.Forward(ids.ToArray(), 1, ids.Count).Slice(1, ids.Count - 1, 1).ToArray(); // [vocab]
            ids.Add(Array.IndexOf(logits, logits.Max()));
        }
        return ids.ToArray();
    }
}
