using PeftGen.Quantization;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// A frozen 4-bit weight as a tile source for <see cref="TiledWeightMatMulKernel"/>: tiles and row slices are dequantized
/// with the given nibble decoder (<see cref="QuantizedWeight.DequantizeTile"/>).
/// </summary>
internal readonly unsafe struct QuantizedTileSource(QuantizedWeight weight, NibbleDecoder decoder) : IWeightTileSource
{
    /// <inheritdoc />
    public int Rows => weight.Rows;

    /// <inheritdoc />
    public int Columns => weight.Columns;

    /// <inheritdoc />
    public void DecodeTile(int r0, int rows, int c0, int cols, float* tile, int ld) =>
        weight.DequantizeTile(r0, rows, c0, cols, tile, ld, decoder);
}
