using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Models.Llama;

/// <summary>
/// Keys and values of the positions generated so far, per layer, so each new token attends to the past
/// without recomputing it. Buffers are [batch, capacity, kvHeads, headDim], allocated once.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _keys;
    private readonly Tensor[] _values;

    /// <summary>Allocates a cache for <paramref name="capacity"/> positions.</summary>
    public KvCache(LlamaConfig config, int batch, int capacity)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        _keys = new Tensor[config.NumHiddenLayers];
        _values = new Tensor[config.NumHiddenLayers];
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i] = Tensor.Create([batch, capacity, config.KeyValueHeads, config.HeadDim], DType.Float32, zeroed: true, scoped: false);
            _values[i] = Tensor.Create([batch, capacity, config.KeyValueHeads, config.HeadDim], DType.Float32, zeroed: true, scoped: false);
        }
    }

    /// <summary>Positions the cache can hold.</summary>
    public int Capacity { get; }

    /// <summary>Positions filled so far (the next token's position).</summary>
    public int Length { get; private set; }

    /// <summary>Writes k, v [batch, t, kvHeads, headDim] of layer <paramref name="layer"/> at positions Length..Length+t-1.</summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        int t = k.Size(1);
        if (Length + t > Capacity)
            throw new InvalidOperationException($"The KV cache holds {Capacity} positions; {Length} are used and {t} more were given. Shorten the prompt or max tokens.");
        Write(_keys[layer], k);
        Write(_values[layer], v);
        return (_keys[layer], _values[layer]);

        void Write(Tensor cache, Tensor source)
        {
            var shape = source.ShapeArray;
            using var region = cache.View(shape, cache.StridesArray, cache.Offset + Length * cache.StridesArray[1]);
            Backend.Of(cache).CopyStrided(source, region, accumulate: false);
        }
    }

    /// <summary>Marks <paramref name="t"/> more positions as filled (after every layer appended).</summary>
    internal void Advance(int t) => Length += t;

    /// <summary>Empties the cache for a new sequence.</summary>
    public void Reset() => Length = 0;

    /// <summary>Releases the buffers.</summary>
    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }
}
