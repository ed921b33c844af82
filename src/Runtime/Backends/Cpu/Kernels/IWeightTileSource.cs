namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// A frozen weight W [<see cref="Rows"/>, <see cref="Columns"/>] stored in some compact form (4-bit codes, bf16, fp16)
/// that <see cref="TiledWeightMatMulKernel"/> multiplies through float32 tiles decoded on demand. Implemented by structs,
/// so the generic kernel is specialised per source and the decode call is direct.
/// </summary>
internal unsafe interface IWeightTileSource
{
    /// <summary>Rows of W (a linear layer's output size).</summary>
    int Rows { get; }

    /// <summary>Columns of W (a linear layer's input size).</summary>
    int Columns { get; }

    /// <summary>
    /// Writes W[r0..r0+rows, c0..c0+cols] as float32 into <paramref name="tile"/> with row stride <paramref name="ld"/>.
    /// Called from several threads at once on disjoint row ranges, so it must not touch shared mutable state.
    /// </summary>
    void DecodeTile(int r0, int rows, int c0, int cols, float* tile, int ld);
}
