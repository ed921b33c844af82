using PeftGen.Models.Llama;

namespace PeftGen.Benchmarks;

/// <summary>
/// Model FLOPs per trained token of a Llama step (the work the step must do, not what an implementation happens to
/// recompute), by part, so utilisation can be read against the machine's SGEMM rate:
/// <list type="bullet">
/// <item>every linear layer with N weights costs 2N forward and 2N for its input gradient; a trainable one 2N more
/// for its weight gradient (so 6N when trained, 4N when frozen);</item>
/// <item>the output head is a linear layer of hidden × vocab weights (frozen unless everything trains);</item>
/// <item>LoRA of rank r on a layer [out, in] is two trainable linears of r·in and r·out weights: 6·r·(in + out);</item>
/// <item>causal attention: Q·Kᵀ and P·V over the (T + 1) / 2 keys a query sees on average, 2 · 2 · d_q · (T + 1) / 2
/// forward per layer, twice that backward (dQ, dK, dV, dP).</item>
/// </list>
/// Norms, activations, softmax and the optimizer are elementwise: counted as time, not FLOPs.
/// </summary>
internal sealed record TrainingFlops(double Projections, double Head, double Adapters, double Attention)
{
    public double Total => Projections + Head + Adapters + Attention;

    /// <param name="config">The model.</param>
    /// <param name="sequence">Tokens per sequence (attention's length).</param>
    /// <param name="baseTrainable">Whether the base weights (projections and head) train (full fine-tuning).</param>
    /// <param name="loraRank">LoRA rank on all seven projections, or 0 for none.</param>
    public static TrainingFlops PerToken(LlamaConfig config, int sequence, bool baseTrainable, int loraRank)
    {
        int hidden = config.HiddenSize, mlp = config.IntermediateSize;
        int qWidth = config.NumAttentionHeads * config.HeadDim, kvWidth = config.KeyValueHeads * config.HeadDim;
        // (in, out) of q, k, v, o, gate, up, down.
        (int In, int Out)[] projections =
            [(hidden, qWidth), (hidden, kvWidth), (hidden, kvWidth), (qWidth, hidden), (hidden, mlp), (hidden, mlp), (mlp, hidden)];
        double linearFactor = baseTrainable ? 6 : 4;
        double projectionWeights = projections.Sum(p => (double)p.In * p.Out);
        double loraWeights = loraRank == 0 ? 0 : projections.Sum(p => (double)loraRank * (p.In + p.Out));
        double attentionForward = 2.0 * 2.0 * qWidth * (sequence + 1) / 2.0;
        int layers = config.NumHiddenLayers;
        return new TrainingFlops(
            Projections: layers * linearFactor * projectionWeights,
            Head: linearFactor * hidden * (double)config.VocabSize,
            Adapters: layers * 6 * loraWeights,
            Attention: layers * 3 * attentionForward);
    }
}
