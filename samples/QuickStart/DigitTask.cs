using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Training;

namespace PeftGen.Samples.QuickStart;

/// <summary>
/// Digit sequences that count by a fixed step modulo 10: s, s+k, s+2k, … The first two digits fix k, so a model
/// that has learned the rule continues any sequence exactly. Steps are drawn from a given set, which lets the
/// base model learn to count up and an adapter teach it to count down. The ten digits are the whole vocabulary
/// (vocab_size 10 in digits-config.json).
/// </summary>
internal sealed class DigitTask(int[] steps, int seed)
{
    /// <summary>The batch at position p (a pure function of p, so training can resume exactly).</summary>
    public Batch BatchAt(long position, int batchSize, int length)
    {
        var random = new Random(unchecked(seed * 1_000_003 + (int)position)); // not HashCode.Combine: that is salted per process
        var inputs = new int[batchSize * length];
        var targets = new int[batchSize * length];
        for (int b = 0; b < batchSize; b++)
        {
            int start = random.Next(10), step = steps[random.Next(steps.Length)];
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
