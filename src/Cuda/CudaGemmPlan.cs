using PeftGen.Backends.Cuda.Native;

namespace PeftGen.Backends.Cuda;

/// <summary>How the CUDA backend's float32 GEMMs use the tensor cores.</summary>
internal enum CudaGemmPrecision
{
    /// <summary>
    /// Float32 storage, operands rounded to bf16 for the tensor cores, float32 accumulation
    /// (<c>CUBLAS_COMPUTE_32F_FAST_16BF</c>): the speed of bf16 training with float32 master weights. The default.
    /// </summary>
    Bf16,
    /// <summary>Operands rounded to TF32 (10-bit mantissa), float32 accumulation (<c>CUBLAS_COMPUTE_32F_FAST_TF32</c>).</summary>
    Tf32,
    /// <summary>Plain float32 (<c>CUBLAS_COMPUTE_32F</c>): slowest, closest to the CPU backend.</summary>
    Float32,
}

/// <summary>
/// One cuBLAS call (column-major) that computes a row-major <see cref="IBackend.Gemm"/>. A row-major matrix X with leading
/// dimension ld is, read column-major, Xᵀ with the same ld; so row-major C = op(A)·op(B) is column-major
/// Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS's first operand is the row-major B (with B's transpose flag), its second the row-major A,
/// m and n swap, and no data moves.
/// </summary>
/// <param name="OpA">cuBLAS transa (applies to the row-major B tensor).</param>
/// <param name="OpB">cuBLAS transb (applies to the row-major A tensor).</param>
/// <param name="M">cuBLAS m: rows of column-major C = the row-major n.</param>
/// <param name="N">cuBLAS n: columns of column-major C = the row-major m.</param>
/// <param name="K">The inner dimension.</param>
/// <param name="Lda">Leading dimension of cuBLAS's A (the row-major B's ldb).</param>
/// <param name="Ldb">Leading dimension of cuBLAS's B (the row-major A's lda).</param>
/// <param name="Ldc">Leading dimension of C.</param>
/// <param name="StrideA">Batch stride of cuBLAS's A (the row-major B's), elements.</param>
/// <param name="StrideB">Batch stride of cuBLAS's B (the row-major A's), elements.</param>
/// <param name="StrideC">Batch stride of C, elements.</param>
/// <param name="Batch">Batch count; 1 calls <c>cublasGemmEx</c>, more <c>cublasGemmStridedBatchedEx</c>.</param>
/// <param name="ComputeType">The <c>cublasComputeType_t</c>.</param>
internal readonly record struct CublasGemmCall(int OpA, int OpB, int M, int N, int K, int Lda, int Ldb, int Ldc,
    long StrideA, long StrideB, long StrideC, int Batch, int ComputeType)
{
    /// <summary>True when there is nothing to compute (an empty C).</summary>
    public bool IsEmpty => M == 0 || N == 0;
}

/// <summary>Maps the backend's row-major GEMMs onto cuBLAS; a pure function, tested on the CPU against the CPU backend.</summary>
internal static class CudaGemmPlan
{
    /// <summary>
    /// The cuBLAS call for row-major C [m, n] = alpha·op(A)·op(B) + beta·C with op(A) [m, k], op(B) [k, n], batched over
    /// <paramref name="batch"/> matrices <paramref name="strideA"/> / <paramref name="strideB"/> / <paramref name="strideC"/>
    /// elements apart (a stride of 0 shares that operand across the batch).
    /// </summary>
    /// <exception cref="ArgumentException">A size is negative, or a leading dimension is shorter than its matrix's rows.</exception>
    public static CublasGemmCall Plan(bool transA, bool transB, int m, int n, int k, int lda, long strideA, int ldb, long strideB,
        int ldc, long strideC, int batch, CudaGemmPrecision precision)
    {
        if (m < 0 || n < 0 || k < 0 || batch < 1)
            throw new ArgumentException($"GEMM sizes must be non-negative and the batch at least 1: m={m}, n={n}, k={k}, batch={batch}.");
        // Row-major A is [m, k] (or [k, m] stored when transposed): its rows hold k (or m) elements.
        int rowA = transA ? m : k, rowB = transB ? k : n;
        if (lda < Math.Max(1, rowA) || ldb < Math.Max(1, rowB) || ldc < Math.Max(1, n))
            throw new ArgumentException($"GEMM leading dimensions too short: lda={lda} (needs ≥ {rowA}), ldb={ldb} (needs ≥ {rowB}), ldc={ldc} (needs ≥ {n}) for m={m}, n={n}, k={k}, transA={transA}, transB={transB}.");
        if (strideA < 0 || strideB < 0 || strideC < 0)
            throw new ArgumentException($"GEMM batch strides must be non-negative: {strideA}, {strideB}, {strideC}.");
        return new CublasGemmCall(
            OpA: transB ? Cublas.OpT : Cublas.OpN,
            OpB: transA ? Cublas.OpT : Cublas.OpN,
            M: n, N: m, K: k,
            Lda: ldb, Ldb: lda, Ldc: ldc,
            StrideA: strideB, StrideB: strideA, StrideC: strideC,
            Batch: batch,
            ComputeType: ComputeType(precision));
    }

    /// <summary>The <c>cublasComputeType_t</c> of <paramref name="precision"/> for float32 operands.</summary>
    public static int ComputeType(CudaGemmPrecision precision) => precision switch
    {
        CudaGemmPrecision.Bf16 => Cublas.Compute32FFast16BF,
        CudaGemmPrecision.Tf32 => Cublas.Compute32FFastTF32,
        CudaGemmPrecision.Float32 => Cublas.Compute32F,
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "unknown GEMM precision"),
    };
}
