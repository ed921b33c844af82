using PeftGen.Tensors;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// A frozen 16-bit weight W [out, in] (bf16 or fp16, as stored in the checkpoint) as a tile source for
/// <see cref="TiledWeightMatMulKernel"/>: tiles and GEMV row slices are widened to float32 with SIMD
/// (<see cref="Float16Conversions.Widen"/>), so W is never widened as a whole and one-row products read 2 bytes per weight.
/// </summary>
internal readonly unsafe struct Float16TileSource : IWeightTileSource
{
    private readonly ushort* _data;   // [rows, columns]
    private readonly DType _dtype;

    /// <summary>Wraps <paramref name="data"/> [rows, columns] of <paramref name="dtype"/> (BFloat16 or Float16).</summary>
    public Float16TileSource(ushort* data, int rows, int columns, DType dtype)
    {
        if (dtype is not (DType.BFloat16 or DType.Float16))
            throw new ArgumentException($"{dtype} is not a 16-bit type.", nameof(dtype));
        _data = data;
        _dtype = dtype;
        Rows = rows;
        Columns = columns;
    }

    /// <summary>The tile source of a contiguous CPU bf16/fp16 tensor [rows, columns].</summary>
    public static Float16TileSource Of(Tensor weight) =>
        new((ushort*)weight.RawData, weight.Size(0), weight.Size(1), weight.DType);

    /// <inheritdoc />
    public int Rows { get; }

    /// <inheritdoc />
    public int Columns { get; }

    /// <inheritdoc />
    public void DecodeTile(int r0, int rows, int c0, int cols, float* tile, int ld)
    {
        for (int r = 0; r < rows; r++)
            Float16Conversions.Widen(new ReadOnlySpan<ushort>(_data + (long)(r0 + r) * Columns + c0, cols),
                new Span<float>(tile + (long)r * ld, cols), _dtype);
    }
}
