using System.Linq;
using PeftGen.Generator.Emitting;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Methods;

/// <summary>The bottleneck members: <c>BottleneckConfig</c>, the sites, and the runtime's <c>BottleneckModel</c> with <c>BottleneckAdapterFile</c>.</summary>
internal sealed partial class BottleneckMethod
{
    protected override void WriteConfig(IndentedWriter w, BottleneckSpec b, RowPlan<BottleneckSite> plan, GenerationSpec spec)
    {
        Members.OpenConfig(w, "bottleneck adapters'", Name, "global::PeftGen.Methods.Bottleneck.BottleneckConfig");
        if (b.Size != 0) w.Line("BottleneckSize = " + Int(b.Size) + ",");
        else if (b.ReductionFactor != BottleneckSpec.DefaultReductionFactor) w.Line("ReductionFactor = " + Int(b.ReductionFactor) + ",");
        if (b.Placement.Value != BottleneckSpec.DefaultPlacement) w.Line("Placement = " + Enum(b.Placement) + ",");
        if (b.Activation.Value != 0) w.Line("Activation = " + Enum(b.Activation) + ",");
        if (!b.Bias) w.Line("Bias = false,");
        if (b.Layers is { } layers) w.Line("Layers = " + Ints(layers) + ",");
        if (b.Seed != 0) w.Line("Seed = " + Int(b.Seed) + ",");
        w.Close(";").Line();
    }

    protected override TrainerWiring Trainer(GenerationSpec spec, BottleneckSpec method) => new(null, null);

    protected override void WriteMembers(IndentedWriter w, BottleneckSpec bottleneck, RowPlan<BottleneckSite> plan, GenerationSpec spec, TrainerWiring trainer)
    {
        string model = "global::PeftGen.Methods.Bottleneck.BottleneckModel<" + spec.Model.FullyQualifiedName + ">";
        Members.WritePlan(w, "global::PeftGen.Methods.Bottleneck.BottleneckSite", "path, hidden size d, bottleneck width m, and trainable parameters",
            plan.Rows?.Select(r => (Quote(r.Path) + ", " + Int(r.Hidden) + ", " + Int(r.Width), r.TrainableParameters)));
        Members.WriteTrainableCount(w, plan, bottleneck.Bias ? "2·d·m + d + m per adapter" : "2·d·m per adapter");
        Members.WriteApply(w, spec.Model, "Freezes this model and inserts bottleneck adapters into its decoder layers per <see cref=\"BottleneckConfig\"/>.",
            model, "", model + ".Create(this, BottleneckConfig)");
        Members.WriteCreateTrainer(w, spec, trainer);
        Members.WriteSave(w, "the bottleneck adapters of", "PeftGen's PEFT-style format (<see cref=\"global::PeftGen.Methods.Bottleneck.BottleneckAdapterFile\"/>, <c>peft_type</c> BOTTLENECK)",
            "each adapter's down and up projections", model, "bottleneck", named: false, "global::PeftGen.Methods.Bottleneck.BottleneckAdapterFile.Save(bottleneck, folder, baseModelNameOrPath)");
        Members.WriteLoad(w, "the bottleneck adapters in <paramref name=\"folder\"/> into this model's decoder layers, with the folder's",
            "<c>adapter_config.json</c>;", model, named: false, "global::PeftGen.Methods.Bottleneck.BottleneckAdapterFile.LoadInto(this, folder)",
            "The config is invalid, or keys and adapters disagree; every mismatch is listed.");
    }
}
