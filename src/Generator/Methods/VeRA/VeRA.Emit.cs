using System.Linq;
using PeftGen.Generator.Emitting;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Methods;

/// <summary>VeRA's members: <c>VeraConfig</c>, the plan, and the runtime's <c>PeftModel</c> with <c>VeraAdapterFile</c>.</summary>
internal sealed partial class VeRAMethod
{
    protected override void WriteConfig(IndentedWriter w, VeRASpec v, RowPlan<VeRARow> plan, GenerationSpec spec)
    {
        Members.OpenConfig(w, "VeRA adapter's", Name, "global::PeftGen.Methods.VeRA.VeraConfig")
         .Line("Rank = " + Int(v.Rank) + ",")
         .Line("Targets = " + Targets(v.Targets) + ",");
        if (v.DInitial != VeRASpec.DefaultDInitial) w.Line("DInitial = " + Float((float)v.DInitial) + ",");
        if (v.ProjectionSeed != 0) w.Line("ProjectionSeed = " + Int(v.ProjectionSeed) + ",");
        if (!v.SaveProjection) w.Line("SaveProjection = false,");
        if (v.Dropout != 0) w.Line("Dropout = " + Float((float)v.Dropout) + ",");
        if (v.Exclude.Count > 0) w.Line("Exclude = " + Strings(v.Exclude) + ",");
        if (v.Layers is { } layers) w.Line("Layers = " + Ints(layers) + ",");
        if (v.Seed != 0) w.Line("Seed = " + Int(v.Seed) + ",");
        w.Close(";").Line();
    }

    protected override TrainerWiring Trainer(GenerationSpec spec, VeRASpec method) =>
        new(VeraModel(spec), "peft") { DropoutRng = true };

    private static string VeraModel(GenerationSpec spec) => "global::PeftGen.Methods.VeRA.VeraModel<" + spec.Model.FullyQualifiedName + ">";

    protected override void WriteMembers(IndentedWriter w, VeRASpec vera, RowPlan<VeRARow> plan, GenerationSpec spec, TrainerWiring trainer)
    {
        Members.WritePlan(w, "global::PeftGen.Methods.AdaptedLayer", "path, in and out features, rank, alpha and scaling (1), whether the base is 4-bit, and trainable parameters (out + r)",
            plan.Rows?.Select(r => (Quote(r.Path) + ", " + Int(r.InFeatures) + ", " + Int(r.OutFeatures) + ", " + Int(r.Rank) + ", 1f, 1f, " + Bool(r.Quantized), r.TrainableParameters)));
        Members.WriteTrainableCount(w, plan, "the b and d vectors: out + r per layer");
        string quantized = spec.Model.Companions.Quantize != null ? ", storing their base weights in 4 bits" : "";
        Members.WriteApply(w, spec.Model, "Freezes this model and adds VeRA to the layers <see cref=\"VeraConfig\"/> targets" + quantized + ".",
            VeraModel(spec), "", "global::PeftGen.Methods.VeRA.VeraModel.Create(this, VeraConfig, QuantizationConfig)");
        Members.WriteCreateTrainer(w, spec, trainer);
        Members.WriteSave(w, "VeRA adapter <paramref name=\"adapter\"/> of", "Hugging Face PEFT format (<see cref=\"global::PeftGen.Methods.VeRA.VeraAdapterFile\"/>)",
            "the b and d vectors of each layer and, when <see cref=\"VeraConfig\"/> saves them, the shared projections",
            VeraModel(spec), "peft", named: true, "global::PeftGen.Methods.VeRA.VeraAdapterFile.Save(peft, folder, adapter, baseModelNameOrPath)");
        Members.WriteLoad(w, "the VeRA adapter in <paramref name=\"folder\"/> onto this model as <paramref name=\"adapter\"/>, with the folder's",
            "<c>adapter_config.json</c> and projections, quantizing the adapted layers' bases per <see cref=\"QuantizationConfig\"/>;",
            VeraModel(spec), named: true, "global::PeftGen.Methods.VeRA.VeraAdapterFile.LoadInto(this, folder, QuantizationConfig, adapter)",
            "The config is invalid, keys and layers disagree (every mismatch listed), or the projections are missing.");
    }
}
