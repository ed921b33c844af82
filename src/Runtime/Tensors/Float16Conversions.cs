using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace PeftGen.Tensors;

/// <summary>Conversions between float32 and the 16-bit storage types, with round-to-nearest-even.</summary>
internal static class Float16Conversions
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
                NarrowToBFloat16(source, destination);
                break;
            case DType.Float16:
                TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<ushort, Half>(destination));
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
                WidenBFloat16(source, destination);
                break;
            case DType.Float16:
                // Vectorized in TensorPrimitives (bit arithmetic: .NET exposes no F16C); ~4x slower than bf16, still far
                // faster than the GEMM that consumes the tile.
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<ushort, Half>(source), destination);
                break;
            default:
                throw new ArgumentException($"{dtype} is not a 16-bit type", nameof(dtype));
        }
    }

    /// <summary>
    /// bfloat16 → float32 with SIMD: zero-extend each 16-bit word and shift it into the upper half. The frozen 16-bit
    /// linear layers widen every weight tile through here, so it must run at memory speed.
    /// </summary>
    private static void WidenBFloat16(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        ref ushort s = ref MemoryMarshal.GetReference(source);
        ref uint d = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(destination));
        nuint n = (nuint)source.Length, i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 32 <= n; i += 32)
            {
                var (lower, upper) = Vector512.Widen(Vector512.LoadUnsafe(ref s, i));
                Vector512.ShiftLeft(lower, 16).StoreUnsafe(ref d, i);
                Vector512.ShiftLeft(upper, 16).StoreUnsafe(ref d, i + 16);
            }
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
            {
                var (lower, upper) = Vector256.Widen(Vector256.LoadUnsafe(ref s, i));
                Vector256.ShiftLeft(lower, 16).StoreUnsafe(ref d, i);
                Vector256.ShiftLeft(upper, 16).StoreUnsafe(ref d, i + 8);
            }
        for (; i < n; i++) Unsafe.Add(ref d, i) = (uint)Unsafe.Add(ref s, i) << 16;
    }

    /// <summary>float32 → bfloat16 with SIMD, the same rounding as <see cref="ToBFloat16"/> (nearest even, NaN stays quiet).</summary>
    private static void NarrowToBFloat16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        ref uint s = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(source));
        ref ushort d = ref MemoryMarshal.GetReference(destination);
        nuint n = (nuint)source.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
                Vector256.Narrow(RoundToBFloat16(Vector256.LoadUnsafe(ref s, i)), RoundToBFloat16(Vector256.LoadUnsafe(ref s, i + 8)))
                    .StoreUnsafe(ref d, i);
        for (; i < n; i++) Unsafe.Add(ref d, i) = ToBFloat16(BitConverter.UInt32BitsToSingle(Unsafe.Add(ref s, i)));
    }

    /// <summary>The bfloat16 bits of each float32 lane, in the lane's low 16 bits (Narrow then packs them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> RoundToBFloat16(Vector256<uint> bits)
    {
        var rounded = (bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One)) >> 16;
        var nan = Vector256.GreaterThan(bits & Vector256.Create(0x7FFF_FFFFu), Vector256.Create(0x7F80_0000u));
        return Vector256.ConditionalSelect(nan, (bits >> 16) | Vector256.Create(0x0040u), rounded);
    }
}
