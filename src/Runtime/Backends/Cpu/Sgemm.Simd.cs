using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// The vector operations the skinny paths (Sgemm.Skinny.cs) are written against. Like
    /// <see cref="IMicroKernel"/>, implemented by structs so each instantiation is specialised,
    /// with the width and register budget as JIT-time constants, and every call inlined.
    /// </summary>
    /// <typeparam name="V">The vector type: one register of <see cref="Width"/> floats.</typeparam>
    private interface ISimd<V> where V : struct
    {
        /// <summary>Floats per vector.</summary>
        static abstract int Width { get; }

        /// <summary>
        /// Whether the ISA has 32 vector registers (AVX-512): selects the larger register blocks.
        /// The 16-register blocks are sized so the accumulators and operands never spill.
        /// </summary>
        static abstract bool ManyRegisters { get; }

        /// <summary>Whether the packers may use the AVX 8x8 transpose (as <see cref="IMicroKernel.UseAvx"/>).</summary>
        static abstract bool UseAvx { get; }

        static abstract V Zero { get; }

        static abstract V Load(float* source);

        static abstract void Store(float* destination, V value);

        static abstract V Broadcast(float value);

        /// <summary>a * b + c.</summary>
        static abstract V MultiplyAdd(V a, V b, V c);

        static abstract V Multiply(V a, V b);

        static abstract V Add(V a, V b);

        /// <summary>The horizontal sums of four vectors, in order.</summary>
        static abstract Vector128<float> Sum4(V a, V b, V c, V d);
    }

    /// <summary>512-bit AVX-512F vectors; pairs with <see cref="Avx512Kernel"/>.</summary>
    private readonly struct Simd512 : ISimd<Vector512<float>>
    {
        public static int Width => 16;
        public static bool ManyRegisters => true;
        public static bool UseAvx => true;
        public static Vector512<float> Zero => Vector512<float>.Zero;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(float* source) => Vector512.Load(source);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(float* destination, Vector512<float> value) => Vector512.Store(value, destination);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Broadcast(float value) => Vector512.Create(value);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplyAdd(a, b, c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
        {
            // Fold 128-bit lanes pairwise across the four inputs until one vector holds a, b, c, d
            // as four partial sums each (one lane apiece), then finish inside the lanes: 14
            // shuffles and adds for four dot products instead of a full reduction per vector.
            var ab = Avx512F.Shuffle4x128(a, b, 0b01_00_01_00) + Avx512F.Shuffle4x128(a, b, 0b11_10_11_10); // a0+a2 a1+a3 b0+b2 b1+b3
            var cd = Avx512F.Shuffle4x128(c, d, 0b01_00_01_00) + Avx512F.Shuffle4x128(c, d, 0b11_10_11_10);
            var abcd = Avx512F.Shuffle4x128(ab, cd, 0b10_00_10_00) + Avx512F.Shuffle4x128(ab, cd, 0b11_01_11_01); // lanes: a b c d
            abcd += Avx512F.Permute4x32(abcd, 0b10_11_00_01);
            abcd += Avx512F.Permute4x32(abcd, 0b01_00_11_10); // every element of lane i is its total
            return Avx512F.PermuteVar16x32(abcd, Vector512.Create(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)).GetLower().GetLower();
        }
    }

    /// <summary>256-bit AVX2 + FMA3 vectors; pairs with <see cref="Avx2Kernel"/>.</summary>
    private readonly struct Simd256 : ISimd<Vector256<float>>
    {
        public static int Width => 8;
        public static bool ManyRegisters => false;
        public static bool UseAvx => true;
        public static Vector256<float> Zero => Vector256<float>.Zero;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(float* source) => Vector256.Load(source);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(float* destination, Vector256<float> value) => Vector256.Store(value, destination);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Broadcast(float value) => Vector256.Create(value);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplyAdd(a, b, c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
        {
            // hadd(hadd(a, b), hadd(c, d)) leaves a b c d partial sums in each 128-bit half.
            var abcd = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
            return abcd.GetLower() + abcd.GetUpper();
        }
    }

    /// <summary><see cref="Vector{T}"/>; pairs with <see cref="PortableKernel"/> and, like it, is correct everywhere.</summary>
    private readonly struct SimdPortable : ISimd<Vector<float>>
    {
        public static int Width => Vector<float>.Count;
        public static bool ManyRegisters => false;
        public static bool UseAvx => false;
        public static Vector<float> Zero => Vector<float>.Zero;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<float> Load(float* source) => Vector.Load(source);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(float* destination, Vector<float> value) => Vector.Store(value, destination);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<float> Broadcast(float value) => new(value);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<float> MultiplyAdd(Vector<float> a, Vector<float> b, Vector<float> c) => Vector.MultiplyAddEstimate(a, b, c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<float> Multiply(Vector<float> a, Vector<float> b) => a * b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<float> Add(Vector<float> a, Vector<float> b) => a + b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Sum4(Vector<float> a, Vector<float> b, Vector<float> c, Vector<float> d)
            => Vector128.Create(Vector.Sum(a), Vector.Sum(b), Vector.Sum(c), Vector.Sum(d));
    }
}
