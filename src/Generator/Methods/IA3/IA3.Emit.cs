using System.Linq;
using PeftGen.Generator.Emitting;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Methods;

/// <summary>(IA)³'s members: <c>IA3Config</c>, the plan, and the runtime's <c>IA3Model</c> with <c>IA3AdapterFile</c>.</summary>
internal sealed partial class IA3Method
{
    protected override void WriteConfig(IndentedWriter w, IA3Spec a, RowPlan<IA3Row> plan, GenerationSpec spec)
    {
        Members.OpenConfig(w, "(IA)³ adapter's", Name, "global::PeftGen.Methods.IA3.IA3Config")
         .Line("Targets = " + Targets(a.Targets) + ",")
         .Line("FeedForward = " + (a.FeedForward is { } ff ? Targets(ff) : "null") + ",");
        if (a.Exclude.Count > 0) w.Line("Exclude = " + Strings(a.Exclude) + ",");
        if (!a.InitWeights) w.Line("InitWeights = false,");
        if (a.Seed != 0) w.Line("Seed = " + Int(a.Seed) + ",");
        w.Close(";").Line();
    }

    protected override TrainerWiring Trainer(GenerationSpec spec, IA3Spec method) => new(null, null);

    protected override void WriteMembers(IndentedWriter w, IA3Spec ia3, RowPlan<IA3Row> plan, GenerationSpec spec, TrainerWiring trainer)
    {
        string model = "global::PeftGen.Methods.IA3.IA3Model<" + spec.Model.FullyQualifiedName + ">";
        Members.WritePlan(w, "global::PeftGen.Methods.IA3.IA3AdaptedLayer", "path, in and out features, whether the vector scales the input (feed-forward), and trainable parameters",
            plan.Rows?.Select(r => (Quote(r.Path) + ", " + Int(r.InFeatures) + ", " + Int(r.OutFeatures) + ", " + Bool(r.FeedForward), r.TrainableParameters)));
        Members.WriteTrainableCount(w, plan, "one vector per layer: in channels for feed-forward layers, out channels otherwise");
        Members.WriteApply(w, spec.Model, "Freezes this model and adds (IA)³ vectors to the layers <see cref=\"IA3Config\"/> targets.",
            model, "", model + ".Create(this, IA3Config)");
        Members.WriteCreateTrainer(w, spec, trainer);
        Members.WriteSave(w, "(IA)³ adapter <paramref name=\"adapter\"/> of", "Hugging Face PEFT format (<see cref=\"global::PeftGen.Methods.IA3.IA3AdapterFile\"/>)",
            "one <c>ia3_l</c> vector per adapted layer", model, "ia3", named: true, "global::PeftGen.Methods.IA3.IA3AdapterFile.Save(ia3, folder, adapter, baseModelNameOrPath)");
        Members.WriteLoad(w, "the (IA)³ adapter in <paramref name=\"folder\"/> onto this model as <paramref name=\"adapter\"/>, with the folder's",
            "<c>adapter_config.json</c>;", model, named: true, "global::PeftGen.Methods.IA3.IA3AdapterFile.LoadInto(this, folder, adapter)",
            "The config is invalid or does not fit this model, or keys and layers disagree; every mismatch is listed.");
    }
}
