using System.Globalization;
using PeftGen.IO;
using PeftGen.Methods.LoRA;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.DeltaLoRA;

/// <summary>
/// Delta-LoRA artifacts: a PEFT LoRA adapter folder (<see cref="PeftAdapterFile"/>; Python PEFT loads it as plain LoRA)
/// plus <c>delta_lora_base.safetensors</c>, the base change the run applied, factored per layer as
/// <c>base_model.model.&lt;path&gt;.delta_lora_A</c> [2r, in] and <c>.delta_lora_B</c> [out, 2r] with
/// ΔW = delta_lora_B · delta_lora_A (metadata: format "pt", method "DELTA_LORA", update_ratio, start_step,
/// updates_applied). The fine-tuned model is W0 + ΔW + s·B·A: add ΔW to the base, then apply the adapter.
/// </summary>
public static class DeltaLoRAFile
{
    /// <summary>Name of the base-change file.</summary>
    public const string BaseDeltaFileName = "delta_lora_base.safetensors";

    private const string KeyPrefix = AdapterFolder.KeyPrefix;
    private const string SuffixA = ".delta_lora_A";
    private const string SuffixB = ".delta_lora_B";

    /// <summary>Writes the adapter of <paramref name="updater"/> and its accumulated base change to <paramref name="folder"/> (each file atomically).</summary>
    public static void Save<TModel>(PeftModel<TModel> peft, DeltaLoRAUpdater updater, string folder, string? baseModelNameOrPath = null)
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(peft);
        ArgumentNullException.ThrowIfNull(updater);
        ArgumentNullException.ThrowIfNull(folder);
        var tensors = new List<(string, Tensor)>();
        try
        {
            foreach (var (path, deltaA, deltaB, rank) in updater.BaseDelta())
            {
                tensors.Add((KeyPrefix + path + SuffixA, Tensor.FromArray(deltaA, rank, deltaA.Length / rank)));   // [2r, in]
                tensors.Add((KeyPrefix + path + SuffixB, Tensor.FromArray(deltaB, deltaB.Length / rank, rank)));   // [out, 2r]
            }
            Directory.CreateDirectory(folder);
            AdapterFolder.SaveWeights(Path.Combine(folder, BaseDeltaFileName), tensors, new Dictionary<string, string>
            {
                ["format"] = "pt",
                ["method"] = "DELTA_LORA",
                ["update_ratio"] = updater.Options.UpdateRatio.ToString("R", CultureInfo.InvariantCulture),
                ["start_step"] = updater.Options.StartStep.ToString(CultureInfo.InvariantCulture),
                ["updates_applied"] = updater.UpdatesApplied.ToString(CultureInfo.InvariantCulture),
            }, RopeOrder.Of(peft.Model), DeltaRows);
        }
        finally
        {
            foreach (var (_, t) in tensors) t.Dispose();
        }
        PeftAdapterFile.Save(peft, folder, updater.Adapter, baseModelNameOrPath);
    }

    /// <summary>
    /// Adds the saved base change to the float base weights of <paramref name="model"/>, then wraps it with the saved
    /// LoRA adapter (plain LoRA from then on). Nothing changes when the files do not fit the model.
    /// </summary>
    /// <exception cref="InvalidDataException">A key has no float linear layer, or a shape differs; every mismatch is listed.</exception>
    public static PeftModel<TModel> LoadInto<TModel>(TModel model, string folder, string adapterName = "default") where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(folder);
        string deltaPath = Path.Combine(folder, BaseDeltaFileName);
        if (!File.Exists(deltaPath)) throw new FileNotFoundException($"No {BaseDeltaFileName} in {folder}: this is not a Delta-LoRA folder (a plain LoRA adapter loads with PeftAdapterFile).", deltaPath);
        using var file = AdapterFolder.Open(deltaPath, RopeOrder.Of(model), DeltaRows);
        if (!file.Metadata.TryGetValue("method", out var method) || method != "DELTA_LORA")
            throw new InvalidDataException($"{deltaPath}: metadata \"method\" must be \"DELTA_LORA\".");
        var problems = new List<string>();
        var layers = new List<(string Path, Linear Layer)>();
        foreach (var key in file.TensorNames)
        {
            if (!key.StartsWith(KeyPrefix, StringComparison.Ordinal) || !(key.EndsWith(SuffixA, StringComparison.Ordinal) || key.EndsWith(SuffixB, StringComparison.Ordinal)))
            {
                problems.Add($"key '{key}' is not '{KeyPrefix}<path>{SuffixA}' or '{SuffixB}'");
                continue;
            }
            if (!key.EndsWith(SuffixA, StringComparison.Ordinal)) continue;
            string path = key[KeyPrefix.Length..^SuffixA.Length];
            Linear? linear = null;
            try
            {
                linear = model.GetModule(path) as Linear;
            }
            catch (KeyNotFoundException)
            {
            }
            if (linear == null)
            {
                problems.Add($"key '{key}': the model has no float Linear at '{path}'");
                continue;
            }
            var a = file.GetInfo(key).Shape;
            string keyB = KeyPrefix + path + SuffixB;
            if (!file.Contains(keyB))
            {
                problems.Add($"key '{keyB}' is missing");
                continue;
            }
            var b = file.GetInfo(keyB).Shape;
            if (a.Length != 2 || b.Length != 2 || a[1] != linear.InFeatures || b[0] != linear.OutFeatures || a[0] != b[1])
                problems.Add($"'{path}' [{linear.OutFeatures}, {linear.InFeatures}]: delta factors {ShapeUtil.Format(b)} · {ShapeUtil.Format(a)} do not fit");
            else layers.Add((path, linear));
        }
        if (problems.Count > 0)
            throw new InvalidDataException($"{deltaPath} does not fit the model ({problems.Count} mismatches): {string.Join("; ", problems)}.");
        var peft = PeftAdapterFile.LoadInto(model, folder, null, adapterName);
        foreach (var (path, linear) in layers)
        {
            var baseLinear = peft.Model.GetModule(path) is LoRALinear wrapped ? (Linear)wrapped.BaseLayer : linear;
            using var a = file.ReadTensor(KeyPrefix + path + SuffixA, DType.Float32);           // [2r, in]
            using var b = file.ReadTensor(KeyPrefix + path + SuffixB, DType.Float32);           // [out, 2r]
            int rank = a.Size(0), inF = a.Size(1), outF = b.Size(0);
            baseLinear.UpdateWeight(weight =>                                                   // [out, in] += b·a
                Backends.Backend.Of(weight).Gemm(false, false, outF, inF, rank, 1f, b, rank, 0, a, inF, 0, 1f, weight, inF, 0, 1));
        }
        return peft;
    }

    /// <summary>ΔW's left factor [out, 2r] has the layer's output rows (reordered for interleaved RoPE); the right factor does not.</summary>
    private static Reorder? DeltaRows(RopeOrder rope, string key, IReadOnlyList<int> shape) =>
        key.EndsWith(SuffixB, StringComparison.Ordinal) ? rope.Rows(key, shape) : null;
}
