using PeftGen.Tensors;

namespace PeftGen.Nn;

/// <summary>A lookup table of token vectors, weight [vocab, dim] (PyTorch's <c>nn.Embedding</c>).</summary>
public sealed class Embedding : Module
{
    /// <summary>Creates a table; with <paramref name="random"/> rows are N(0, <paramref name="std"/>²), otherwise zero.</summary>
    public Embedding(int vocabSize, int dim, Random? random = null, float std = 0.02f)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        Weight = RegisterParameter("weight", random == null ? Tensor.Zeros(vocabSize, dim) : Tensor.RandN([vocabSize, dim], random, std));
    }

    /// <summary>The table, [vocab, dim].</summary>
    public Tensor Weight { get; }

    /// <summary>Looks up <paramref name="ids"/> laid out as [batch, time] → [batch, time, dim].</summary>
    public Tensor Forward(ReadOnlySpan<int> ids, int batch, int time) => Ops.Embedding(Weight, ids, batch, time);
}
