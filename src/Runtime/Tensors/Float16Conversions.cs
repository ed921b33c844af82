using System.Runtime.CompilerServices;

namespace PeftGen.Tensors;

/// <summary>Conversions between float32 and the 16-bit storage types, with round-to-nearest-even.</summary>
public static class Float16Conversions
{
    /// <summary>float32 → bfloat16 bits, rounding to nearest even; NaN stays a quiet NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000) return (ushort)((bits >> 16) | 0x0040);
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>bfloat16 bits → float32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FromBFloat16(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>float32 → IEEE half bits, rounding to nearest even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToFloat16(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>IEEE half bits → float32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FromFloat16(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Converts a span of float32 to 16-bit values of <paramref name="dtype"/>.</summary>
    public static void Narrow(ReadOnlySpan<float> source, Span<ushort> destination, DType dtype)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source", nameof(destination));
        switch (dtype)
        {
            case DType.BFloat16:
                for (int i = 0; i < source.Length; i++) destination[i] = ToBFloat16(source[i]);
                break;
            case DType.Float16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(source, System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, Half>(destination));
                break;
            default:
                throw new ArgumentException($"{dtype} is not a 16-bit type", nameof(dtype));
        }
    }

    /// <summary>Converts 16-bit values of <paramref name="dtype"/> to float32.</summary>
    public static void Widen(ReadOnlySpan<ushort> source, Span<float> destination, DType dtype)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source", nameof(destination));
        switch (dtype)
        {
            case DType.BFloat16:
                for (int i = 0; i < source.Length; i++) destination[i] = FromBFloat16(source[i]);
                break;
            case DType.Float16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, Half>(source), destination);
                break;
            default:
                throw new ArgumentException($"{dtype} is not a 16-bit type", nameof(dtype));
        }
    }
}
