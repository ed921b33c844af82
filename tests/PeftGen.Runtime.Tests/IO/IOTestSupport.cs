using PeftGen.Autograd;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.Tests.IO;

/// <summary>Temporary folders and shared helpers of the file-format tests.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"peftgen-io-{Guid.NewGuid():N}");

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}

internal static class IOTestSupport
{
    public static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 16, MaxPositionEmbeddings = 16, TieWordEmbeddings = false,
    };

    public static readonly int[] Ids = [1, 5, 7, 3, 9, 2, 4, 8];

    public static float[] Logits(LlamaForCausalLM model, int[]? ids = null, int batch = 2)
    {
        ids ??= Ids;
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        return model.Forward(ids, batch, ids.Length / batch).ToArray();
    }

    public static double MaxAbsDiff(float[] a, float[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths {a.Length} and {b.Length} differ");
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }
}
