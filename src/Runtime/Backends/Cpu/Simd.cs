using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu;

/// <summary>
/// The vector operations the CPU kernels (<see cref="Sgemm"/>'s skinny paths, <see cref="Kernels.AttentionKernel"/>)
/// are written against. Implemented by structs so each generic instantiation is specialised, with the width as a
/// JIT-time constant and every call inlined. Kernel-specific tuning (block shapes, register budgets) is derived from
/// <see cref="Width"/> inside each kernel.
/// </summary>
/// <typeparam name="TV">The vector type: one register of <see cref="Width"/> floats.</typeparam>
internal unsafe interface ISimd<TV> where TV : struct
{
    /// <summary>Floats per vector.</summary>
    static abstract int Width { get; }

    static abstract TV Zero { get; }
    static abstract TV Load(float* source);
    static abstract void Store(TV value, float* destination);
    static abstract TV Broadcast(float value);

    /// <summary>a · b + c: fused (FMA) at 512 and 256 bits, and at 128 where the hardware has FMA (else unfused, never emulated).</summary>
    static abstract TV MultiplyAdd(TV a, TV b, TV c);

    static abstract TV Multiply(TV a, TV b);
    static abstract TV Add(TV a, TV b);
    static abstract TV Subtract(TV a, TV b);

    /// <summary>Lane-wise maximum, NaN-propagating.</summary>
    static abstract TV Max(TV a, TV b);

    /// <summary>The largest lane, NaN-propagating.</summary>
    static abstract float MaxAcross(TV v);

    static abstract float SumAcross(TV v);

    /// <summary>The horizontal sums of four vectors, in order.</summary>
    static abstract Vector128<float> Sum4(TV a, TV b, TV c, TV d);

    /// <summary>e^x per lane (<see cref="SimdExp"/>): 0 far below the normal range and for −∞, NaN stays NaN.</summary>
    static abstract TV Exp(TV x);

    /// <summary>Lanes below count from v, the others from other.</summary>
    static abstract TV FirstLanes(TV v, int count, TV other);

    /// <summary>x clamped to [low, high]; NaN stays NaN.</summary>
    static abstract TV Clamp(TV x, float low, float high);

    /// <summary>The float whose bits are t's shifted left by 23 (a biased exponent in t's low bits becomes a power of two).</summary>
    static abstract TV ExponentFromBits(TV t);

    /// <summary>0 where x &lt; limit, else y.</summary>
    static abstract TV ZeroBelow(TV y, TV x, float limit);
}

/// <summary>512-bit AVX-512F vectors.</summary>
internal readonly unsafe struct Simd512 : ISimd<Vector512<float>>
{
    public static int Width => 16;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* source) => Vector512.Load(source);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector512<float> value, float* destination) => value.Store(destination);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Broadcast(float value) => Vector512.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Subtract(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);
    public static float MaxAcross(Vector512<float> v) => Simd256.MaxAcross(Vector256.Max(v.GetLower(), v.GetUpper()));
    public static float SumAcross(Vector512<float> v) => Vector512.Sum(v);

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

    // vscalefps multiplies by 2^kf itself, overflowing to +∞ and flushing to 0 as it should, which saves the
    // exponent-bits path's shift, compare and select. Only the clamp stays: −∞ − kf · ln 2 would be NaN, and
    // from −110 down e^x · 2^−159 rounds to exactly 0 (−104 would still round up to the smallest denormal).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        if (!Avx512F.IsSupported) return SimdExp.ByExponentBits<Simd512, Vector512<float>>(x);
        var xc = Clamp(x, -110f, 100f);
        var t = Vector512.FusedMultiplyAdd(xc, Vector512.Create(SimdExp.Log2E), Vector512.Create(SimdExp.RoundingBias));
        var kf = t - Vector512.Create(SimdExp.RoundingBias);
        return Avx512F.Scale(SimdExp.OfRemainder<Simd512, Vector512<float>>(xc, kf), kf);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> FirstLanes(Vector512<float> v, int count, Vector512<float> other)
        => Vector512.ConditionalSelect(Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(count)).AsSingle(), v, other);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Clamp(Vector512<float> x, float low, float high)
        // maxps / minps return their second operand when either is NaN, so x goes second.
        => Avx512F.IsSupported ? Avx512F.Min(Vector512.Create(high), Avx512F.Max(Vector512.Create(low), x))
            : Vector512.Clamp(x, Vector512.Create(low), Vector512.Create(high));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ExponentFromBits(Vector512<float> t) => Vector512.ShiftLeft(t.AsInt32(), 23).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ZeroBelow(Vector512<float> y, Vector512<float> x, float limit)
        => Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(limit)), Vector512<float>.Zero, y);
}

/// <summary>256-bit AVX2 (+ FMA3) vectors.</summary>
internal readonly unsafe struct Simd256 : ISimd<Vector256<float>>
{
    public static int Width => 8;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* source) => Vector256.Load(source);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector256<float> value, float* destination) => value.Store(destination);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Broadcast(float value) => Vector256.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Subtract(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);
    public static float MaxAcross(Vector256<float> v) => Simd128.MaxAcross(Vector128.Max(v.GetLower(), v.GetUpper()));
    public static float SumAcross(Vector256<float> v) => Vector256.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        // hadd(hadd(a, b), hadd(c, d)) leaves a b c d partial sums in each 128-bit half.
        var abcd = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
        return abcd.GetLower() + abcd.GetUpper();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Exp(Vector256<float> x) => SimdExp.ByExponentBits<Simd256, Vector256<float>>(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> FirstLanes(Vector256<float> v, int count, Vector256<float> other)
        => Vector256.ConditionalSelect(Vector256.LessThan(Vector256<int>.Indices, Vector256.Create(count)).AsSingle(), v, other);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Clamp(Vector256<float> x, float low, float high)
        => Avx.IsSupported ? Avx.Min(Vector256.Create(high), Avx.Max(Vector256.Create(low), x))
            : Vector256.Clamp(x, Vector256.Create(low), Vector256.Create(high));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ExponentFromBits(Vector256<float> t) => Vector256.ShiftLeft(t.AsInt32(), 23).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ZeroBelow(Vector256<float> y, Vector256<float> x, float limit)
        => Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(limit)), Vector256<float>.Zero, y);
}

/// <summary>
/// 128-bit vectors: hardware-accelerated on every x64 and Arm64 .NET runs on, so this is the width that is correct
/// (and vectorised) everywhere. SGEMM's portable kernel runs with it, and is only picked where there is no AVX2 + FMA,
/// where <see cref="System.Numerics.Vector{T}"/> (what it used before) is 128 bits too.
/// </summary>
internal readonly unsafe struct Simd128 : ISimd<Vector128<float>>
{
    public static int Width => 4;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* source) => Vector128.Load(source);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector128<float> value, float* destination) => value.Store(destination);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Broadcast(float value) => Vector128.Create(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.MultiplyAddEstimate(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Subtract(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);

    public static float MaxAcross(Vector128<float> v)
    {
        float max = v.GetElement(0);
        for (int i = 1; i < Vector128<float>.Count; i++)
        {
            max = MathF.Max(max, v.GetElement(i)); // NaN-propagating
        }
        return max;
    }

    public static float SumAcross(Vector128<float> v) => Vector128.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d)
        // hadd(hadd(a, b), hadd(c, d)) is a b c d's totals in order.
        => Sse3.IsSupported ? Sse3.HorizontalAdd(Sse3.HorizontalAdd(a, b), Sse3.HorizontalAdd(c, d))
            : Vector128.Create(Vector128.Sum(a), Vector128.Sum(b), Vector128.Sum(c), Vector128.Sum(d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Exp(Vector128<float> x) => SimdExp.ByExponentBits<Simd128, Vector128<float>>(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> FirstLanes(Vector128<float> v, int count, Vector128<float> other)
        => Vector128.ConditionalSelect(Vector128.LessThan(Vector128<int>.Indices, Vector128.Create(count)).AsSingle(), v, other);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Clamp(Vector128<float> x, float low, float high)
        => Sse.IsSupported ? Sse.Min(Vector128.Create(high), Sse.Max(Vector128.Create(low), x))
            : Vector128.Clamp(x, Vector128.Create(low), Vector128.Create(high));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ExponentFromBits(Vector128<float> t) => Vector128.ShiftLeft(t.AsInt32(), 23).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ZeroBelow(Vector128<float> y, Vector128<float> x, float limit)
        => Vector128.ConditionalSelect(Vector128.LessThan(x, Vector128.Create(limit)), Vector128<float>.Zero, y);
}

/// <summary>The polynomial e^x behind <see cref="ISimd{TV}.Exp"/>.</summary>
internal static class SimdExp
{
    // e^x = 2^k · e^r with k = round(x · log2 e) and r = x − k · ln 2 (|r| ≤ ln2 / 2, ln 2 in two parts so k · Ln2Hi
    // is exact), e^r from a degree-6 polynomial interpolating e^r at the Chebyshev nodes of that interval (relative
    // error 2e-8 with float coefficients, well under the float rounding of the evaluation: ≲ 1 ulp overall).
    // Adding RoundingBias = 1.5 · 2²³ makes the float addition itself round x · log2 e to an integer (no round
    // instruction). 2^k is applied by vscalefps where there is AVX-512 (Simd512.Exp), else by building it from
    // exponent bits (ByExponentBits). Both give 0 for −∞ and for inputs so negative that e^x is below the
    // smallest normal float or so, and keep NaN.
    internal const float Log2E = 1.44269504088896341f;
    internal const float Ln2Hi = 0.693359375f;
    internal const float Ln2Lo = -2.12194440e-4f;
    internal const float RoundingBias = 12582912f;
    internal const float ExpLow = -87.3365448f; // ln(2⁻¹²⁶): below it the exponent-bits path returns 0
    internal const float ExpHigh = 88f;         // the exponent-bits path saturates at e^88 (no +∞ from bits)
    internal const float P2 = 0.5f;
    internal const float P3 = 0.166664153f;
    internal const float P4 = 0.0416663513f;
    internal const float P5 = 0.00837512594f;
    internal const float P6 = 0.00139411085f;

    // e^r for |r| ≲ ln2 / 2, where xc = kf · ln 2 + r.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TV OfRemainder<TS, TV>(TV xc, TV kf) where TS : struct, ISimd<TV> where TV : struct
    {
        var r = TS.MultiplyAdd(kf, TS.Broadcast(-Ln2Hi), xc);
        r = TS.MultiplyAdd(kf, TS.Broadcast(-Ln2Lo), r);
        var poly = TS.MultiplyAdd(TS.Broadcast(P6), r, TS.Broadcast(P5));
        poly = TS.MultiplyAdd(poly, r, TS.Broadcast(P4));
        poly = TS.MultiplyAdd(poly, r, TS.Broadcast(P3));
        poly = TS.MultiplyAdd(poly, r, TS.Broadcast(P2));
        poly = TS.MultiplyAdd(poly, r, TS.Broadcast(1f));
        return TS.MultiplyAdd(poly, r, TS.Broadcast(1f));
    }

    // Inputs clamped to [ExpLow, ExpHigh] so k stays in the normal exponent range; with 127 added to the rounding
    // bias, k + 127 lands in the low mantissa bits and shifting the bits left by 23 gives 2^k. Below ExpLow
    // (−∞ included) the result is 0 (the true value is < 1.2e-38); above ExpHigh it saturates at e^88 (attention's
    // inputs are ≤ 0 up to rounding).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TV ByExponentBits<TS, TV>(TV x) where TS : struct, ISimd<TV> where TV : struct
    {
        var xc = TS.Clamp(x, ExpLow, ExpHigh);
        var t = TS.MultiplyAdd(xc, TS.Broadcast(Log2E), TS.Broadcast(RoundingBias + 127f));
        var kf = TS.Subtract(t, TS.Broadcast(RoundingBias + 127f));
        return TS.ZeroBelow(TS.Multiply(OfRemainder<TS, TV>(xc, kf), TS.ExponentFromBits(t)), x, ExpLow);
    }
}

/// <summary>
/// A compile-time integer for tile shapes: a kernel generic over it is specialised per value by the JIT, which folds
/// the guards on it away (so one tile routine serves several register-block shapes).
/// </summary>
internal interface IConstant
{
    static abstract int Value { get; }
}

internal readonly struct One : IConstant { public static int Value => 1; }
internal readonly struct Two : IConstant { public static int Value => 2; }
internal readonly struct Three : IConstant { public static int Value => 3; }
internal readonly struct Four : IConstant { public static int Value => 4; }
internal readonly struct Six : IConstant { public static int Value => 6; }
internal readonly struct Eight : IConstant { public static int Value => 8; }
