using System.Globalization;
using PeftGen.Backends.Cpu;
using PeftGen.IO;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Training;

/// <summary>
/// A prediction of a fine-tuning process's peak resident memory, by part. Predicted from shapes alone by
/// <see cref="MemoryModel.ForTraining"/>, before anything is loaded (<c>peftgen train --dry-run</c>).
/// </summary>
/// <param name="FourBitWeights">Bytes of 4-bit weights: packed codes and (double-quantized) block scales.</param>
/// <param name="FrozenWeights">Bytes of the other weights: 16-bit or float32 frozen linears, embeddings, the head, norms.</param>
/// <param name="Adapter">Bytes of adapter parameters, their gradients and the optimizer's state.</param>
/// <param name="Activations">Bytes of the largest set of activations and activation gradients alive during a step.</param>
/// <param name="Workspace">Bytes of per-thread scratch: GEMM packing buffers and 4-bit dequantization tiles.</param>
/// <param name="Runtime">Bytes of the .NET runtime, the code and the tokenized dataset.</param>
public sealed record MemoryEstimate(long FourBitWeights, long FrozenWeights, long Adapter, long Activations, long Workspace, long Runtime)
{
    /// <summary>Bytes of all weights.</summary>
    public long Weights => FourBitWeights + FrozenWeights;

    /// <summary>The predicted peak resident set, in bytes.</summary>
    public long Total => Weights + Adapter + Activations + Workspace + Runtime;

    /// <summary>The predicted resident set once the model is loaded, before training (weights and runtime).</summary>
    public long AfterLoad => Weights + Runtime;

    /// <summary>One line: the total and its parts, e.g. <c>predicted peak 0.93 GB = weights 0.52 (4-bit 0.48) + adapter 0.10 + …</c>.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"predicted peak {Gb(Total)} GB = weights {Gb(Weights)} (4-bit {Gb(FourBitWeights)}, other {Gb(FrozenWeights)}) + adapter, gradients and optimizer {Gb(Adapter)} + activations {Gb(Activations)} + workspace {Gb(Workspace)} + runtime {Gb(Runtime)}");

    private static string Gb(long bytes) => (bytes / 1e9).ToString(bytes < 10e9 ? "F2" : "F1", CultureInfo.InvariantCulture);
}

/// <summary>
/// Predicts the memory a LoRA or QLoRA fine-tuning run on a Llama-family model will take, from the shapes, the method, the
/// quantization, the batch, the sequence length and gradient checkpointing. Weights and adapter state are counted exactly
/// from the layout this library stores them in; activations follow a per-token model of what the autograd graph keeps
/// alive at its peak, fitted to measured step peaks (see docs/memory.md) and exact to about 1% for LoRA on all linear
/// layers (fewer targets keep fewer activations: the prediction is then an upper bound).
/// </summary>
public static class MemoryModel
{
    /// <summary>
    /// Resident set of the .NET runtime with this library's code jitted and the process's own data, measured with a
    /// 2-step training run of a tiny model: what a process holds beyond tensors.
    /// </summary>
    public const long RuntimeBytes = 90L << 20;

    /// <summary>Per-thread scratch: Sgemm's packed A and B blocks (≈ 1.5 + 4 MiB) and the 4 MiB tile that 4-bit and 16-bit weights are widened into.</summary>
    private const long WorkspacePerThread = 10L << 20;

    /// <summary>Predicts the peak resident memory of training.</summary>
    /// <param name="config">The model's shapes.</param>
    /// <param name="lora">The adapter (targets, ranks, DoRA, LoRA-FA).</param>
    /// <param name="quantization">4-bit storage of the targeted layers (QLoRA), or null for LoRA.</param>
    /// <param name="frozenWeightType">The type frozen weights are kept in (the checkpoint's 16-bit type, or float32).</param>
    /// <param name="batchSize">Rows per micro-batch.</param>
    /// <param name="sequenceLength">Tokens per row.</param>
    /// <param name="gradientCheckpointing">Whether decoder layers recompute their activations in backward.</param>
    /// <param name="optimizer">The optimizer (8-bit ones keep a quarter of the state).</param>
    /// <param name="threads">Threads the kernels run on; null for <see cref="CpuParallel.MaxThreads"/>.</param>
    /// <returns>The estimate, by part.</returns>
    public static MemoryEstimate ForTraining(LlamaConfig config, LoRAConfig lora, QuantizationConfig? quantization, DType frozenWeightType,
        int batchSize, int sequenceLength, bool gradientCheckpointing, OptimizerKind optimizer = OptimizerKind.AdamW, int? threads = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(lora);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequenceLength, 1);
        long c = config.HiddenSize, f = config.IntermediateSize, v = config.VocabSize, layers = config.NumHiddenLayers;
        long kv = (long)config.KeyValueHeads * config.HeadDim;
        int frozenSize = frozenWeightType.ElementSize();

        // Weights, layer by layer, as the loader stores them.
        long fourBit = 0, frozen = 0, adapterParameters = 0, trainable = 0;
        foreach (var (path, inFeatures, outFeatures) in HuggingFaceLlama.LinearLayers(config))
        {
            long count = (long)inFeatures * outFeatures;
            bool adapted = PeftModel.Adapts(lora, path);
            if (adapted && quantization != null) fourBit += FourBitBytes(count, quantization);
            else frozen += count * frozenSize;
            if (!adapted) continue;
            int rank = PeftModel.RankFor(lora, path);
            long a = (long)rank * inFeatures, b = (long)rank * outFeatures, magnitude = lora.UseDoRA ? outFeatures : 0;
            adapterParameters += a + b + magnitude;
            trainable += (lora.UseLoRAFA ? 0 : a) + b + magnitude;
        }
        frozen += v * c * frozenSize;                                                     // the embedding (an untied head is a linear layer above)
        frozen += (2 * layers + 1) * c * sizeof(float);                                   // norms stay float32

        // Adapter: float32 parameters, a gradient per trainable one, and AdamW's two moments (one byte each when 8-bit).
        bool eightBit = optimizer is OptimizerKind.AdamW8bit or OptimizerKind.PagedAdamW8bit;
        double stateBytes = eightBit ? 2 + 2.0 * sizeof(float) / 256 : 2 * sizeof(float); // 8-bit: a byte per moment plus a scale per 256
        long adapter = adapterParameters * sizeof(float) + (long)(trainable * (sizeof(float) + stateBytes));

        long tokens = (long)batchSize * sequenceLength;
        double floatsPerToken = ActivationFloatsPerToken(c, f, kv, layers, gradientCheckpointing, lora.Dropout > 0);
        long activations = (long)(tokens * floatsPerToken * sizeof(float));
        int kernelThreads = threads ?? CpuParallel.MaxThreads;
        // The head and loss kernel's scratch grows SGEMM's pooled buffers past their usual size, and adds the running state.
        long workspace = WorkspacePerThread * kernelThreads
            + Backends.Cpu.Kernels.LinearCrossEntropyKernel.WorkspaceBytes(checked((int)tokens), (int)c, (int)v, frozenWeightType == DType.Float32, kernelThreads);
        return new MemoryEstimate(fourBit, frozen, adapter, activations, workspace, RuntimeBytes);
    }

    /// <summary>
    /// Float32 values per token alive at a training step's peak (activations and their gradients), for LoRA on every
    /// linear layer. The peak falls at one of two moments: at the loss, or later in the backward pass, once the layers'
    /// gradients are being built. Each moment was fitted to measured step peaks (HostMemoryStats) of models whose hidden
    /// size, intermediate size, key/value width, vocabulary (256 to 32,768) and depth were varied one at a time (exact on
    /// all 60 measured points); every term is linear in the shapes. The head and loss keep no [tokens, vocab] logits
    /// (<see cref="Ops.LinearCrossEntropy"/> with a frozen head), so the loss-time moment holds the c-wide input gradient
    /// where it once held the vocab-wide logits, and no term depends on the vocabulary; for Llama shapes (f ≥ 2c) the
    /// backward moment is the larger. Without checkpointing every layer keeps its activations; with it, each layer keeps
    /// its input and one layer is recomputed at a time. Dropout keeps a mask and the dropped input per adapted layer (12c + 2f).
    /// </summary>
    internal static double ActivationFloatsPerToken(long c, long f, long kv, long layers, bool checkpointing, bool dropout)
    {
        double masks = dropout ? 12 * c + 2 * f : 0;                                       // per adapted layer: mask + dropped input
        if (checkpointing)
        {
            double atLossCheckpointed = layers * 0.264 * c + 5.08 * c;                      // layer inputs and the head's input gradient
            double inBackwardCheckpointed = layers * c + 12.7 * c + 5.92 * f + 2.92 * kv    // one layer recomputed at a time
                + (dropout ? masks + 1.5 * c - 293 : 59);
            return Math.Max(atLossCheckpointed, inBackwardCheckpointed);
        }
        double atLoss = layers * (8.96 * c + 2.875 * f + 2.92 * kv + masks) + 3.09 * c + 175;
        double inBackward = layers * (6.75 * c + 3.97 * f + 2.97 * kv + masks) + (dropout ? 11.04 * c - 118 : 9.51 * c + 175);
        return Math.Max(atLoss, inBackward);
    }

    /// <summary>Bytes of a 4-bit weight of <paramref name="count"/> elements: packed codes plus block scales (see <see cref="QuantizedWeight.StorageBytes"/>).</summary>
    private static long FourBitBytes(long count, QuantizationConfig q)
    {
        long blocks = (count + q.BlockSize - 1) / q.BlockSize;
        long groups = (blocks + QuantizedWeight.DoubleQuantBlockSize - 1) / QuantizedWeight.DoubleQuantBlockSize;
        return (count + 1) / 2 + (q.DoubleQuant ? blocks + sizeof(float) * (groups + 1) : sizeof(float) * blocks);
    }
}
