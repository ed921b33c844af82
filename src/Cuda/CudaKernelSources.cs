using System.Reflection;

namespace PeftGen.Backends.Cuda;

/// <summary>The .cu files embedded in the assembly; each is compiled by NVRTC as one module.</summary>
internal enum CudaModule
{
    /// <summary>elementwise.cu: fill, strided copy, add/mul/scale, column sums, reductions, bf16/fp16 casts, embeddings, dropout masks.</summary>
    Elementwise,

    /// <summary>quant4bit.cu: NF4/FP4 dequantization (double quantization included) and the fused dequantize-GEMV.</summary>
    Quant4Bit,

    /// <summary>rmsnorm.cu: RMSNorm forward and backward.</summary>
    RmsNorm,

    /// <summary>rope.cu: rotary embedding, both conventions, forward and inverse.</summary>
    Rope,

    /// <summary>swiglu.cu: SwiGLU and SiLU forward and backward.</summary>
    SwiGlu,

    /// <summary>softmax.cu: row softmax forward and backward.</summary>
    Softmax,

    /// <summary>attention.cu: flash-style causal GQA attention forward and backward.</summary>
    Attention,

    /// <summary>cross_entropy.cu: fused cross-entropy forward and backward with an ignore index.</summary>
    CrossEntropy,

    /// <summary>adamw.cu: AdamW (one tensor and many), 8-bit blockwise AdamW.</summary>
    AdamW,
}

/// <summary>
/// Reads the kernel sources embedded in the PeftGen.Cuda assembly (<c>src/Cuda/Kernels/*.cu</c>, logical names
/// <c>PeftGen.Cuda.Kernels.&lt;file&gt;</c>) and lists the kernels the host launches from each module.
/// </summary>
internal static class CudaKernelSources
{
    /// <summary>Prefix of the embedded resources' logical names.</summary>
    public const string ResourcePrefix = "PeftGen.Cuda.Kernels.";

    /// <summary>The prelude every module is compiled with (types, bf16 conversion, warp and block reductions).</summary>
    public const string CommonFileName = "common.cuh";

    /// <summary>The source file of <paramref name="module"/>.</summary>
    public static string FileName(CudaModule module) => module switch
    {
        CudaModule.Elementwise => "elementwise.cu",
        CudaModule.Quant4Bit => "quant4bit.cu",
        CudaModule.RmsNorm => "rmsnorm.cu",
        CudaModule.Rope => "rope.cu",
        CudaModule.SwiGlu => "swiglu.cu",
        CudaModule.Softmax => "softmax.cu",
        CudaModule.Attention => "attention.cu",
        CudaModule.CrossEntropy => "cross_entropy.cu",
        CudaModule.AdamW => "adamw.cu",
        _ => throw new ArgumentOutOfRangeException(nameof(module), module, null),
    };

    /// <summary>The <c>extern "C" __global__</c> functions the host launches from <paramref name="module"/>.</summary>
    public static IReadOnlyList<string> KernelNames(CudaModule module) => module switch
    {
        CudaModule.Elementwise =>
        [
            CudaKernelNames.Fill, CudaKernelNames.CopyStrided, CudaKernelNames.AddScaled, CudaKernelNames.Mul, CudaKernelNames.MulRows,
            CudaKernelNames.Scale, CudaKernelNames.ColumnSum, CudaKernelNames.ReduceSum, CudaKernelNames.F32ToBf16,
            CudaKernelNames.Bf16ToF32, CudaKernelNames.F16ToF32, CudaKernelNames.F32ToF16, CudaKernelNames.F16ToBf16,
            CudaKernelNames.EmbeddingForward, CudaKernelNames.Embedding16BitForward, CudaKernelNames.EmbeddingBackward,
            CudaKernelNames.DropoutMask,
        ],
        CudaModule.Quant4Bit => [CudaKernelNames.Dequant4BitF32, CudaKernelNames.Dequant4BitBf16, CudaKernelNames.Dequant4BitGemv],
        CudaModule.RmsNorm => [CudaKernelNames.RmsNormForward, CudaKernelNames.RmsNormBackwardDx, CudaKernelNames.RmsNormBackwardDw],
        CudaModule.Rope => [CudaKernelNames.Rope],
        CudaModule.SwiGlu => [CudaKernelNames.SwiGluForward, CudaKernelNames.SwiGluBackward, CudaKernelNames.SiluForward, CudaKernelNames.SiluBackward],
        CudaModule.Softmax => [CudaKernelNames.SoftmaxForward, CudaKernelNames.SoftmaxBackward],
        CudaModule.Attention =>
        [
            CudaKernelNames.AttentionForward, CudaKernelNames.AttentionBackwardDelta, CudaKernelNames.AttentionBackwardDq,
            CudaKernelNames.AttentionBackwardDkDv,
        ],
        CudaModule.CrossEntropy => [CudaKernelNames.CrossEntropyForward, CudaKernelNames.CrossEntropyBackward],
        CudaModule.AdamW => [CudaKernelNames.AdamW, CudaKernelNames.AdamWMulti, CudaKernelNames.AdamW8bit],
        _ => throw new ArgumentOutOfRangeException(nameof(module), module, null),
    };

    /// <summary>The text of an embedded kernel file.</summary>
    /// <exception cref="InvalidOperationException">The resource is missing (a broken build).</exception>
    public static string ReadFile(string fileName)
    {
        var assembly = typeof(CudaKernelSources).Assembly;
        using var stream = assembly.GetManifestResourceStream(ResourcePrefix + fileName)
            ?? throw new InvalidOperationException(
                $"The CUDA kernel source '{fileName}' is not embedded in {assembly.GetName().Name} (resource '{ResourcePrefix}{fileName}'); the build is broken: check the EmbeddedResource items in PeftGen.Runtime.csproj.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>The full NVRTC input of <paramref name="module"/>: the common prelude, then the module with a #line reset.</summary>
    public static string Source(CudaModule module)
    {
        string file = FileName(module);
        return ReadFile(CommonFileName) + $"\n#line 1 \"{file}\"\n" + ReadFile(file);
    }

    /// <summary>Names of every embedded kernel resource file.</summary>
    public static IEnumerable<string> EmbeddedFileNames(Assembly? assembly = null) =>
        (assembly ?? typeof(CudaKernelSources).Assembly).GetManifestResourceNames()
            .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal))
            .Select(n => n[ResourcePrefix.Length..]);
}

/// <summary>The kernel entry points, exactly as declared <c>extern "C" __global__</c> in the .cu files.</summary>
internal static class CudaKernelNames
{
    public const string Fill = "peft_fill_f32";
    public const string CopyStrided = "peft_copy_strided_f32";
    public const string AddScaled = "peft_add_scaled_f32";
    public const string Mul = "peft_mul_f32";
    public const string MulRows = "peft_mul_rows_f32";
    public const string Scale = "peft_scale_f32";
    public const string ColumnSum = "peft_column_sum_f32";
    public const string ReduceSum = "peft_reduce_sum_f64";
    public const string F32ToBf16 = "peft_f32_to_bf16";
    public const string Bf16ToF32 = "peft_bf16_to_f32";
    public const string F16ToF32 = "peft_f16_to_f32";
    public const string F32ToF16 = "peft_f32_to_f16";
    public const string F16ToBf16 = "peft_f16_to_bf16";
    public const string EmbeddingForward = "peft_embedding_fwd_f32";
    public const string Embedding16BitForward = "peft_embedding_fwd_16bit";
    public const string EmbeddingBackward = "peft_embedding_bwd_f32";
    public const string DropoutMask = "peft_dropout_mask_f32";
    public const string Dequant4BitF32 = "peft_dequant4bit_f32";
    public const string Dequant4BitBf16 = "peft_dequant4bit_bf16";
    public const string Dequant4BitGemv = "peft_dequant4bit_gemv_f32";
    public const string RmsNormForward = "peft_rmsnorm_fwd_f32";
    public const string RmsNormBackwardDx = "peft_rmsnorm_bwd_dx_f32";
    public const string RmsNormBackwardDw = "peft_rmsnorm_bwd_dw_f32";
    public const string Rope = "peft_rope_f32";
    public const string SwiGluForward = "peft_swiglu_fwd_f32";
    public const string SwiGluBackward = "peft_swiglu_bwd_f32";
    public const string SiluForward = "peft_silu_fwd_f32";
    public const string SiluBackward = "peft_silu_bwd_f32";
    public const string SoftmaxForward = "peft_softmax_fwd_f32";
    public const string SoftmaxBackward = "peft_softmax_bwd_f32";
    public const string AttentionForward = "peft_attention_fwd_f32";
    public const string AttentionBackwardDelta = "peft_attention_bwd_delta_f32";
    public const string AttentionBackwardDq = "peft_attention_bwd_dq_f32";
    public const string AttentionBackwardDkDv = "peft_attention_bwd_dkdv_f32";
    public const string CrossEntropyForward = "peft_cross_entropy_fwd_f32";
    public const string CrossEntropyBackward = "peft_cross_entropy_bwd_f32";
    public const string AdamW = "peft_adamw_f32";
    public const string AdamWMulti = "peft_adamw_multi_f32";
    public const string AdamW8bit = "peft_adamw8bit_f32";
}
