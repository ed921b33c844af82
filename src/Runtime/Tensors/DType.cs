namespace PeftGen.Tensors;

/// <summary>Element type of a tensor. Compute is float32; 16-bit types are for storage and transfer.</summary>
public enum DType
{
    /// <summary>IEEE 754 single precision: the compute type of every CPU op.</summary>
    Float32,
    /// <summary>bfloat16 (the upper 16 bits of a float32): storage and GPU compute type.</summary>
    BFloat16,
    /// <summary>IEEE 754 half precision: storage type.</summary>
    Float16,
}

/// <summary>Facts about <see cref="DType"/> values.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.BFloat16 or DType.Float16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>The safetensors / PyTorch name of the dtype (F32, BF16, F16).</summary>
    public static string SafetensorsName(this DType dtype) => dtype switch
    {
        DType.Float32 => "F32",
        DType.BFloat16 => "BF16",
        DType.Float16 => "F16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };
}
