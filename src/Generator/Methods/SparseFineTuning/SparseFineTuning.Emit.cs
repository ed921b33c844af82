using PeftGen.Generator.Emitting;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Methods;

/// <summary>
/// The sparse fine-tuning members: <c>SparseFineTuningConfig</c>, the runtime's <c>SparseFineTuning</c>, and a
/// save/load pair of its sparse delta.
/// </summary>
internal sealed partial class SparseFineTuningMethod
{
    private const string Sparse = "global::PeftGen.Methods.Sparse.SparseFineTuning";

    protected override void WriteConfig(IndentedWriter w, SparseFineTuningSpec s, MethodPlan plan, GenerationSpec spec)
    {
        Members.OpenConfig(w, "sparse fine-tuning", Name, "global::PeftGen.Methods.Sparse.SparseFineTuningConfig")
         .Line("Fraction = " + Float((float)s.Fraction) + ",")
         .Line("Targets = " + Targets(s.Targets) + ",");
        if (s.Score.Value != SparseFineTuningSpec.DefaultScore) w.Line("Score = " + Enum(s.Score) + ",");
        if (s.CalibrationBatches != SparseFineTuningSpec.DefaultCalibrationBatches) w.Line("CalibrationBatches = " + Int(s.CalibrationBatches) + ",");
        w.Close(";").Line();
    }

    protected override TrainerWiring Trainer(GenerationSpec spec, SparseFineTuningSpec method) => new(Sparse, "sparse")
    {
        Always = true,
        AfterStep = "the sparse gradient masks and the restore of untrained entries after each step,",
    };

    protected override void WriteMembers(IndentedWriter w, SparseFineTuningSpec sparse, MethodPlan plan, GenerationSpec spec, TrainerWiring trainer)
    {
        Members.WriteApply(w, spec.Model, "Chooses the entries of this model that train per <see cref=\"SparseFineTuningConfig\"/> and freezes everything else;"
                + " train with <see cref=\"CreateTrainer\"/>, which attaches the gradient masks.",
            Sparse,
            "global::System.Func<global::PeftGen.Data.Batch, global::PeftGen.Tensors.Tensor>? loss = null, global::PeftGen.Data.IBatchSource? calibration = null",
            Sparse + ".Create(this, SparseFineTuningConfig, loss, calibration)",
            "loss\">Computes a calibration batch's loss (needed when the score is not None).",
            "calibration\">The calibration batches (needed when the score is not None).");
        Members.WriteCreateTrainer(w, spec, trainer);
        WriteSaveLoad(w);
    }

    /// <summary>
    /// Sparse fine-tuning saves no adapter but a sparse delta of the base weights (<c>SparseDelta</c>, PeftGen's own
    /// safetensors format, no config); the generated pair keeps the folder shape with the file name in a constant, and
    /// loading adds the delta to this model's weights (returning it, so that <c>ApplyTo(model, -1)</c> takes it back out).
    /// </summary>
    private static void WriteSaveLoad(IndentedWriter w)
    {
        const string Delta = "global::PeftGen.Methods.Sparse.SparseDelta";
        w.Line("/// <summary>The file <see cref=\"SaveAdapter\"/> writes in its folder: the sparse delta, in PeftGen's own safetensors format.</summary>")
         .Member("public const string SparseDeltaFileName = " + Sparse + ".DeltaFileName;")
         .Line()
         .Line("/// <summary>")
         .Line("/// Writes the change of every trainable entry of <paramref name=\"sparse\"/> (<see cref=\"" + Sparse + ".Delta\"/>) to")
         .Line("/// <paramref name=\"folder\"/> as <see cref=\"SparseDeltaFileName\"/> (<see cref=\"" + Delta + "\"/>'s format: indices, values and")
         .Line("/// shape per parameter), written in full under a temporary name, then renamed into place. Sparse fine-tuning has no PEFT")
         .Line("/// adapter config, so there is no <c>adapter_config.json</c>.")
         .Line("/// </summary>")
         .Line("/// <param name=\"sparse\">The selection from <see cref=\"ApplyAdapters\"/>, after training.</param>")
         .Line("/// <param name=\"folder\">The folder, created when missing.</param>")
         .Member("public static void SaveAdapter(" + Sparse + " sparse, string folder)")
         .Open()
         .Line("global::System.ArgumentNullException.ThrowIfNull(sparse);")
         .Line("sparse.SaveAdapter(folder);")
         .Close()
         .Line()
         .Line("/// <summary>")
         .Line("/// Adds the sparse delta in <paramref name=\"folder\"/> (<see cref=\"SparseDeltaFileName\"/>) to this model's weights; every")
         .Line("/// parameter is checked first, and nothing changes when one is missing or has another shape. Returns the delta:")
         .Line("/// <c>ApplyTo(model, -1)</c> takes it back out.")
         .Line("/// </summary>")
         .Line("/// <param name=\"folder\">The folder <see cref=\"SaveAdapter\"/> wrote.</param>")
         .Line("/// <exception cref=\"" + InvalidData + "\">The file is not a sparse delta, or it does not fit this model; every mismatch is listed.</exception>")
         .Member("public " + Delta + " LoadAdapter(string folder)")
         .Open()
         .Line("var delta = " + Delta + ".Load(global::System.IO.Path.Combine(folder, SparseDeltaFileName));")
         .Line("delta.ApplyTo(this);")
         .Line("return delta;")
         .Close()
         .Line();
    }
}
