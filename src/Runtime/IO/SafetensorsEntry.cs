using System.Runtime.InteropServices;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// One tensor for <see cref="Safetensors.Save(string, IEnumerable{SafetensorsEntry}, IReadOnlyDictionary{string, string}?)"/>:
/// a runtime tensor (F32, BF16, F16), or a plain array of 64- or 32-bit integers or floats with the shape it fills
/// (for index and shape tensors, which the runtime's float tensors cannot hold).
/// </summary>
public sealed class SafetensorsEntry
{
    private readonly Array? _values;

    private SafetensorsEntry(string name, string dtypeName, long[] shape, Tensor? tensor, DType? storeAs, Array? values)
    {
        Name = name;
        DTypeName = dtypeName;
        Shape = shape;
        Tensor = tensor;
        StoreAs = storeAs;
        _values = values;
    }

    /// <summary>The tensor's name in the file.</summary>
    public string Name { get; }

    /// <summary>The safetensors dtype it is stored as (F32, BF16, F16, I64, I32).</summary>
    public string DTypeName { get; }

    /// <summary>The stored shape.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>The runtime tensor, or null for an array entry.</summary>
    internal Tensor? Tensor { get; }

    /// <summary>The dtype a runtime tensor is converted to (null: its own).</summary>
    internal DType? StoreAs { get; }

    /// <summary>The entry's name, dtype and shape, as announced in the header.</summary>
    internal SafetensorsTensorSpec Spec => new(Name, DTypeName, Shape);

    /// <summary>The raw little-endian bytes of an array entry.</summary>
    internal ReadOnlySpan<byte> ArrayBytes => _values switch
    {
        long[] l => MemoryMarshal.AsBytes(l.AsSpan()),
        int[] i => MemoryMarshal.AsBytes(i.AsSpan()),
        float[] f => MemoryMarshal.AsBytes(f.AsSpan()),
        _ => throw new InvalidOperationException($"'{Name}' is a tensor entry, not an array."),
    };

    /// <summary>A runtime tensor, stored as <paramref name="storeAs"/> (its own dtype when null). Checked when saved.</summary>
    public static SafetensorsEntry FromTensor(string name, Tensor tensor, DType? storeAs = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(tensor, $"tensors['{name}']");
        return new SafetensorsEntry(name, (storeAs ?? tensor.DType).SafetensorsName(), [.. tensor.ShapeArray.Select(d => (long)d)], tensor, storeAs, null);
    }

    /// <summary>64-bit integers (I64) of shape <paramref name="shape"/>; a vector [values.Length] when no shape is given.</summary>
    /// <exception cref="ArgumentException">The shape has a negative dimension or does not hold exactly the values.</exception>
    public static SafetensorsEntry FromInt64(string name, long[] values, params long[] shape) => FromArray(name, "I64", values, shape);

    /// <summary>32-bit integers (I32) of shape <paramref name="shape"/>; a vector [values.Length] when no shape is given.</summary>
    /// <exception cref="ArgumentException">The shape has a negative dimension or does not hold exactly the values.</exception>
    public static SafetensorsEntry FromInt32(string name, int[] values, params long[] shape) => FromArray(name, "I32", values, shape);

    /// <summary>Floats (F32) of shape <paramref name="shape"/>; a vector [values.Length] when no shape is given.</summary>
    /// <exception cref="ArgumentException">The shape has a negative dimension or does not hold exactly the values.</exception>
    public static SafetensorsEntry FromFloat32(string name, float[] values, params long[] shape) => FromArray(name, "F32", values, shape);

    private static SafetensorsEntry FromArray(string name, string dtypeName, Array values, long[] shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(values, $"values of '{name}'");
        ArgumentNullException.ThrowIfNull(shape);
        long[] dims = shape.Length == 0 ? [values.Length] : [.. shape];
        if (dims.Any(d => d < 0))
            throw new ArgumentException($"Tensor '{name}': shape [{string.Join(", ", dims)}] has a negative dimension.", nameof(shape));
        long count = dims.Aggregate(1L, (a, d) => a * d);
        if (count != values.Length)
            throw new ArgumentException($"Tensor '{name}': shape [{string.Join(", ", dims)}] holds {count} values, the array {values.Length}.", nameof(shape));
        return new SafetensorsEntry(name, dtypeName, dims, null, null, values);
    }
}
