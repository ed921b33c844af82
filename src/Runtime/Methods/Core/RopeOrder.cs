using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods;

/// <summary>
/// The q_proj/k_proj output order of a model whose RoPE rotates interleaved pairs (llama2.c and Meta checkpoints,
/// <see cref="LlamaConfig.RopeInterleaved"/>): within each head, feature 2i pairs with 2i + 1, where Hugging Face's
/// rotate-half order pairs i with i + head_dim/2 (see <c>HuggingFaceLlama.InterleavedToHalves</c>). Adapter files are
/// always written in Hugging Face's order, so they fit the converted folder and Python PEFT: tensors whose rows (or
/// columns) are q/k output features move into the halves order on save and back on load.
/// </summary>
internal sealed class RopeOrder
{
    private readonly LlamaConfig _config;

    private RopeOrder(LlamaConfig config) => _config = config;

    /// <summary>The reordering for <paramref name="model"/>, or null when its q/k features are already in Hugging Face's order.</summary>
    public static RopeOrder? Of(Module model) => model is LlamaForCausalLM llama ? For(llama.Config) : null;

    /// <summary>The reordering for a Llama model with <paramref name="config"/>, or null when it rotates halves (Hugging Face's order).</summary>
    public static RopeOrder? For(LlamaConfig config) => config.RopeInterleaved ? new RopeOrder(config) : null;

    /// <summary>
    /// The row reordering of a tensor whose first dimension is the output features of the layer <paramref name="key"/>
    /// names (lora_B, a DoRA magnitude, an (IA)³ output vector, a delta's left factor, a bias), or null when the key
    /// names no q_proj/k_proj or the rows are not heads · head_dim.
    /// </summary>
    public Reorder? Rows(string key, IReadOnlyList<int> shape)
    {
        int heads = key.Contains(".self_attn.q_proj.", StringComparison.Ordinal) ? _config.NumAttentionHeads
            : key.Contains(".self_attn.k_proj.", StringComparison.Ordinal) ? _config.KeyValueHeads
            : 0;
        if (heads == 0 || shape.Count == 0 || shape[0] != heads * _config.HeadDim) return null;
        long count = shape.Aggregate(1L, (a, d) => a * d);
        var source = new int[shape[0]];
        for (int h = 0; h < heads; h++) FillHead(source, h * _config.HeadDim);
        return new Reorder(source, checked((int)(count / shape[0])));
    }

    /// <summary>
    /// The column reordering of prefix tuning's <c>prompt_embeddings</c> [n, layers · 2 · kv_dim]: per layer the keys
    /// (already rotated, so in the model's q/k order) come first, then the values, which keep their order. Null when
    /// the width is not that of this model.
    /// </summary>
    public Reorder? PrefixKeys(IReadOnlyList<int> shape)
    {
        int kvDim = _config.KeyValueHeads * _config.HeadDim, width = _config.NumHiddenLayers * 2 * kvDim;
        if (shape.Count != 2 || shape[1] != width) return null;
        var source = Enumerable.Range(0, width).ToArray();
        for (int l = 0; l < _config.NumHiddenLayers; l++)
            for (int h = 0; h < _config.KeyValueHeads; h++) FillHead(source, 2 * l * kvDim + h * _config.HeadDim);
        return new Reorder(source, 1);
    }

    /// <summary>Within one head at <paramref name="offset"/>: file position j·half + i holds model feature 2i + j.</summary>
    private void FillHead(int[] source, int offset)
    {
        int half = _config.HeadDim / 2;
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                source[offset + j * half + i] = offset + 2 * i + j;
    }
}

/// <summary>
/// A permutation of units (runs of <see cref="UnitElements"/> elements), repeated over every block of
/// <see cref="Source"/>.Length units: file unit t holds model unit <see cref="Source"/>[t].
/// </summary>
/// <param name="Source">For each unit of a block in file order, the unit of the model order it comes from.</param>
/// <param name="UnitElements">Elements per unit (a row's length for a row reordering, 1 for single features).</param>
internal sealed record Reorder(int[] Source, int UnitElements)
{
    /// <summary>A new float32 tensor with <paramref name="model"/>'s values in file order; the caller disposes it.</summary>
    public Tensor ToFile(Tensor model)
    {
        var values = model.ToArray();
        var result = new float[values.Length];
        int unit = UnitElements, block = Source.Length * unit;
        for (int b = 0; b < values.Length; b += block)
            for (int t = 0; t < Source.Length; t++)
                values.AsSpan(b + Source[t] * unit, unit).CopyTo(result.AsSpan(b + t * unit, unit));
        var file = Tensor.Create(model.ShapeArray, DType.Float32, zeroed: false, scoped: false);
        result.CopyTo(file.AsSpan());
        return file;
    }

    /// <summary>Rewrites stored bytes (elements of <paramref name="elementSize"/> bytes) from file order into model order.</summary>
    public void ToModel(Span<byte> stored, int elementSize)
    {
        var copy = stored.ToArray();
        int unitBytes = UnitElements * elementSize, block = Source.Length * unitBytes;
        for (int b = 0; b + block <= stored.Length; b += block)
            for (int t = 0; t < Source.Length; t++)
                copy.AsSpan(b + t * unitBytes, unitBytes).CopyTo(stored.Slice(b + Source[t] * unitBytes, unitBytes));
    }
}
