using PeftGen.Tensors;

namespace PeftGen.Methods.VeRA;

/// <summary>
/// VeRA's frozen random projections, shared by every adapted layer: A [r, in_max] and B [out_max, r], each
/// Kaiming-uniform over its fan-in (bound √(6 / fan_in), as PEFT's <c>_kaiming_init</c>), A drawn first, both from one
/// generator seeded by the projection seed. A layer [out, in] uses A[:, :in] and B[:out, :] (and the first r rows of
/// A / columns of B when its adapter's rank is lower). They are not parameters: no gradients, no optimizer state.
/// </summary>
public sealed class VeraProjections : IDisposable
{
    private VeraProjections(Tensor a, Tensor b, int? seed)
    {
        A = a;
        B = b;
        Seed = seed;
    }

    /// <summary>A [r, in_max].</summary>
    public Tensor A { get; }

    /// <summary>B [out_max, r].</summary>
    public Tensor B { get; }

    /// <summary>The seed they were generated from, or null when they were loaded from a file.</summary>
    public int? Seed { get; }

    /// <summary>r: rows of A, columns of B.</summary>
    public int Rank => A.Size(0);

    /// <summary>in_max: the widest input a layer may have.</summary>
    public int InFeatures => A.Size(1);

    /// <summary>out_max: the widest output a layer may have.</summary>
    public int OutFeatures => B.Size(0);

    /// <summary>Draws A [rank, inFeatures] then B [outFeatures, rank] from a generator seeded with <paramref name="seed"/>.</summary>
    public static VeraProjections Generate(int rank, int inFeatures, int outFeatures, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rank, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        var rng = new Rng(unchecked((ulong)(long)seed) ^ 0x7E4A_5EED_0000_0001UL);
        var a = Tensor.Create([rank, inFeatures], DType.Float32, zeroed: false, scoped: false);          // [r, in_max]
        var b = Tensor.Create([outFeatures, rank], DType.Float32, zeroed: false, scoped: false);         // [out_max, r]
        KaimingUniform(a.AsSpan(), inFeatures, rng);
        KaimingUniform(b.AsSpan(), rank, rng);
        return new VeraProjections(a, b, seed);
    }

    /// <summary>Wraps loaded matrices (copied): A [r, in_max], B [out_max, r].</summary>
    /// <exception cref="ArgumentException">The shapes do not pair up.</exception>
    public static VeraProjections FromTensors(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Rank != 2 || b.Rank != 2 || a.Size(0) != b.Size(1))
            throw new ArgumentException($"VeRA projections must be A [r, in] and B [out, r] with the same r; got A {ShapeUtil.Format(a.Shape)} and B {ShapeUtil.Format(b.Shape)}.");
        var ca = Tensor.Create(a.ShapeArray, DType.Float32, zeroed: false, scoped: false);
        var cb = Tensor.Create(b.ShapeArray, DType.Float32, zeroed: false, scoped: false);
        a.Contiguous().AsSpan().CopyTo(ca.AsSpan());
        b.Contiguous().AsSpan().CopyTo(cb.AsSpan());
        return new VeraProjections(ca, cb, null);
    }

    /// <summary>Throws <see cref="ArgumentException"/> when layer <paramref name="path"/> [out, in] with rank r is not covered.</summary>
    public void CheckCovers(string path, int rank, int inFeatures, int outFeatures)
    {
        if (rank > Rank)
            throw new ArgumentException(
                $"VeRA rank {rank} for '{path}' exceeds the rank {Rank} of the shared projections (A [{Rank}, {InFeatures}], B [{OutFeatures}, {Rank}]): " +
                "every VeRA adapter of a model shares them, so r may not exceed the first adapter's. Add the adapter with the largest rank first, or lower r.");
        if (inFeatures > InFeatures || outFeatures > OutFeatures)
            throw new ArgumentException(
                $"'{path}' is [{outFeatures}, {inFeatures}] but the shared VeRA projections cover at most [{OutFeatures}, {InFeatures}] " +
                $"(A [{Rank}, {InFeatures}], B [{OutFeatures}, {Rank}]): add adapters targeting the widest layers first, or target only layers the projections cover.");
    }

    /// <summary>True when both matrices hold the same values as <paramref name="other"/>'s.</summary>
    internal bool SameValues(VeraProjections other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return A.Shape.SequenceEqual(other.A.Shape) && B.Shape.SequenceEqual(other.B.Shape)
            && A.AsSpan().SequenceEqual(other.A.AsSpan()) && B.AsSpan().SequenceEqual(other.B.AsSpan());
    }

    private static void KaimingUniform(Span<float> values, int fanIn, Rng rng)
    {
        float bound = MathF.Sqrt(6f / fanIn); // gain √2, std = gain/√fan_in, bound = √3·std
        for (int i = 0; i < values.Length; i++) values[i] = (2f * rng.NextSingle() - 1f) * bound;
    }

    /// <summary>Releases both matrices.</summary>
    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}
