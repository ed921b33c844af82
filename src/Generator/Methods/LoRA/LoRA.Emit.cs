using System.Linq;
using PeftGen.Generator.Emitting;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Methods;

/// <summary>
/// LoRA's members: each adapter's config, plan and PEFT file keys, the training memory estimate and
/// <c>FromPretrained</c> of Llama models, <c>ApplyAdapters()</c> with the run-time rank checks the compiler could not do,
/// the typed layer walk, the adapter parameters, and PEFT-format <c>SaveAdapter</c>/<c>LoadAdapter</c> (Delta-LoRA's
/// pair when the class declares it).
/// </summary>
internal sealed partial class LoRAMethod
{
    protected override void WriteConfig(IndentedWriter w, LoRASpec lora, LoRAPlan plan, GenerationSpec spec)
    {
        var delta = spec.Model.Companions.DeltaLoRA;
        foreach (var output in plan.Adapters)
        {
            var a = output.Adapter;
            Members.OpenConfig(w, Quote(a.Name) + " adapter's", Name, "global::PeftGen.Methods.LoRA.LoRAConfig", output.MemberPrefix + "LoRAConfig")
             .Line("Rank = " + Int(a.Rank) + ",")
             .Line("Alpha = " + Float((float)a.Alpha) + ",")
             .Line("Targets = " + Targets(a.Targets) + ",");
            if (a.Dropout != 0) w.Line("Dropout = " + Float((float)a.Dropout) + ",");
            if (a.UseRsLoRA) w.Line("UseRsLoRA = true,");
            if (a.UseDoRA) w.Line("UseDoRA = true,");
            if (a.UseLoRAFA) w.Line("UseLoRAFA = true,");
            if (a.LoRAFAGradientCorrection) w.Line("LoRAFAGradientCorrection = true,");
            if (delta != null)
                w.Line("DeltaLoRA = new global::PeftGen.Methods.DeltaLoRA.DeltaLoRAOptions { StartStep = " + Int(delta.StartStep) + ", UpdateRatio = " + Float((float)delta.UpdateRatio) + " },");
            if (a.Init.Value != 0) w.Line("Init = " + Enum(a.Init) + ",");
            if (a.Bias.Value != 0) w.Line("Bias = " + Enum(a.Bias) + ",");
            if (output.Exclude.Count > 0) w.Line("Exclude = " + Strings(output.Exclude) + ",");
            if (a.Layers is { } layers) w.Line("Layers = " + Ints(layers) + ",");
            if (a.Seed != 0) w.Line("Seed = " + Int(a.Seed) + ",");
            WritePattern(w, "RankPattern", "int", output.RankPattern, value => Int((int)value));
            WritePattern(w, "AlphaPattern", "float", output.AlphaPattern, value => Float((float)value));
            w.Close(";").Line();
        }
    }

    private static void WritePattern(IndentedWriter w, string name, string valueType, EquatableArray<PatternEntrySpec> pattern, System.Func<double, string> value)
    {
        if (pattern.Count == 0) return;
        w.Line(name + " = new global::System.Collections.Generic.Dictionary<string, " + valueType + ">").Open();
        foreach (var entry in pattern) w.Line("[" + Quote(entry.Key) + "] = " + value(entry.Value) + ",");
        w.Close(",");
    }

    private static string PeftModel(GenerationSpec spec) => "global::PeftGen.Methods.LoRA.PeftModel<" + spec.Model.FullyQualifiedName + ">";

    /// <summary>An adapter's name for prose: its C# literal without the quotes.</summary>
    private static string Unquoted(string name) => Quote(name).Replace("\"", "");

    /// <summary>The first adapter's name as a C# string: the one <c>ApplyAdapters</c> activates and members default to.</summary>
    private static string FirstName(LoRAPlan plan) => Quote(plan.Adapters[0].Adapter.Name);

    protected override TrainerWiring Trainer(GenerationSpec spec, LoRASpec lora) => new(PeftModel(spec), "peft")
    {
        DropoutRng = true,
        AfterStep = spec.Model.Companions.DeltaLoRA == null ? null
            : "the Delta-LoRA base update of the " + Unquoted(lora.Adapters[0].Name) + " adapter after each step,",
    };

    protected override void WriteMembers(IndentedWriter w, LoRASpec lora, LoRAPlan plan, GenerationSpec spec, TrainerWiring trainer)
    {
        foreach (var adapter in plan.Adapters.Where(a => a.Plan != null)) WritePlan(w, adapter);
        foreach (var adapter in plan.Adapters.Where(a => a.FileKeys != null)) WriteFileKeys(w, adapter);
        WriteEstimateTrainingMemory(w, spec, plan);
        WriteFromPretrained(w, spec, plan);
        WriteApplyAdapters(w, spec, plan);
        Members.WriteCreateTrainer(w, spec, trainer);
        WriteLinearLayers(w, spec.Model);
        WriteAdapterParameters(w, plan);
        if (spec.Model.Companions.DeltaLoRA != null) WriteDeltaSaveLoad(w, spec, plan);
        else WriteSaveLoad(w, spec, plan);
        WriteRankCheck(w, plan);
    }

    private static void WritePlan(IndentedWriter w, AdapterOutputSpec output)
    {
        var plan = output.Plan!.Value;
        string name = Quote(output.Adapter.Name);
        w.Line("/// <summary>")
         .Line("/// The layers the " + name + " adapter adapts, known at compile time: path, in and out features, rank, alpha,")
         .Line("/// scaling, whether the base is 4-bit, and trainable parameters. Equals <c>ApplyAdapters().Plan(" + name + ")</c>.")
         .Line("/// </summary>")
         .Member("public static " + Generic + "IReadOnlyList<global::PeftGen.Methods.AdaptedLayer> " + output.MemberPrefix + "AdapterPlan { get; } = new global::PeftGen.Methods.AdaptedLayer[]")
         .Open();
        foreach (var row in plan)
        {
            w.Line("new global::PeftGen.Methods.AdaptedLayer(" + Quote(row.Path) + ", " + Int(row.InFeatures) + ", " + Int(row.OutFeatures) + ", "
                + Int(row.Rank) + ", " + Float(row.Alpha) + ", " + Float(row.Scaling) + ", " + Bool(row.Quantized) + ", " + Long(row.TrainableParameters) + "),");
        }
        w.Close(";")
         .Line()
         .Line("/// <summary>Parameters the " + name + " adapter trains (A, B and DoRA magnitudes; biases trained by its bias mode are not counted).</summary>")
         .Member("public const long " + output.MemberPrefix + "TrainableParameterCount = " + Long(plan.Sum(r => r.TrainableParameters)) + ";")
         .Line();
    }

    private static void WriteFileKeys(IndentedWriter w, AdapterOutputSpec output)
    {
        string name = Quote(output.Adapter.Name);
        w.Line("/// <summary>");
        if (output.Plan != null)
        {
            w.Line("/// The keys of the " + name + " adapter's tensors in a PEFT <c>adapter_model.safetensors</c>, in module order, known at")
             .Line("/// compile time (biases its bias mode saves are not listed).");
        }
        else
        {
            w.Line("/// The keys of the " + name + " adapter's tensors in a PEFT <c>adapter_model.safetensors</c>, in module order, with \"{i}\"")
             .Line("/// for each module-list index: the layers its targets may select; list lengths, layer filters and shapes are only")
             .Line("/// known at run time (biases its bias mode saves are not listed).");
        }
        w.Line("/// </summary>")
         .Member("public static " + Generic + "IReadOnlyList<string> " + output.MemberPrefix + "AdapterFileKeys { get; } = new string[]")
         .Open();
        foreach (var key in output.FileKeys!.Value) w.Line(Quote(key) + ",");
        w.Close(";").Line();
    }

    private static void WriteApplyAdapters(IndentedWriter w, GenerationSpec spec, LoRAPlan plan)
    {
        var first = plan.Adapters[0];
        string names = string.Join(", ", plan.Adapters.Select(a => Quote(a.Adapter.Name)));
        w.Line("/// <summary>")
         .Line("/// Freezes this model and wraps the layers its adapters target (" + names + ") with LoRA"
            + (spec.Model.Companions.Quantize != null ? ", storing their base weights in 4 bits" : "") + ".")
         .Line("/// The " + FirstName(plan) + " adapter is active. The model is owned by the returned <see cref=\"global::PeftGen.Methods.LoRA.PeftModel{TModel}\"/>.")
         .Line("/// </summary>")
         .Line("/// <exception cref=\"global::System.ArgumentException\">")
         .Line("/// A target matches no layer of this model, or a rank exceeds a layer's size (where the compiler could not check it,")
         .Line("/// with the text of diagnostic PEFT003).")
         .Line("/// </exception>")
         .Member("public " + PeftModel(spec) + " ApplyAdapters()")
         .Open();
        foreach (var adapter in plan.Adapters.Where(a => a.Plan == null))
            w.Line("ThrowIfRankExceedsLayer(" + adapter.MemberPrefix + "LoRAConfig);");
        string create = "global::PeftGen.Methods.LoRA.PeftModel.Create(this, " + first.MemberPrefix + "LoRAConfig, QuantizationConfig, " + FirstName(plan) + ");";
        bool layerDrop = Members.HasLayerDrop(spec.Model);
        if (plan.Adapters.Count == 1 && !layerDrop)
        {
            w.Line("return " + create).Close().Line();
            return;
        }
        w.Line("var peft = " + create);
        foreach (var adapter in plan.Adapters.Skip(1))
            w.Line("peft.AddAdapter(" + Quote(adapter.Adapter.Name) + ", " + adapter.MemberPrefix + "LoRAConfig);");
        if (layerDrop) w.Line("global::PeftGen.Methods.LayerDrop.LayerDropper.Apply(this, LayerDropConfig);");
        w.Line("return peft;").Close().Line();
    }

    private static void WriteSaveLoad(IndentedWriter w, GenerationSpec spec, LoRAPlan plan)
    {
        w.Line("/// <summary>")
         .Line("/// Writes adapter <paramref name=\"adapter\"/> of <paramref name=\"peft\"/> to <paramref name=\"folder\"/> in Hugging Face PEFT")
         .Line("/// format: <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> with keys such as")
         .Line("/// <c>base_model.model.&lt;layer path&gt;.lora_A.weight</c>, the tensors read through this class's members.")
         .Line("/// Both files are written in full under temporary names, then renamed into place.")
         .Line("/// </summary>")
         .Line("/// <param name=\"peft\">The model with its adapters (from <see cref=\"ApplyAdapters\"/> or <see cref=\"LoadAdapter\"/>).</param>")
         .Line("/// <param name=\"folder\">The adapter folder, created when missing.</param>")
         .Line("/// <param name=\"adapter\">The adapter to save.</param>")
         .Line("/// <param name=\"baseModelNameOrPath\">The config's <c>base_model_name_or_path</c>, or null.</param>")
         .Member("public static void SaveAdapter(" + PeftModel(spec) + " peft, string folder, string adapter = " + FirstName(plan) + ", string? baseModelNameOrPath = null)")
         .Open()
         .Line("global::System.ArgumentNullException.ThrowIfNull(peft);")
         .Line("var tensors = global::PeftGen.Generated.LoRAAdapterLayers.FileTensors(peft.Model.LinearLayers(), adapter);")
         .Line("global::PeftGen.Generated.LoRAAdapterLayers.Save(peft.Model, peft.GetConfig(adapter), tensors, folder, baseModelNameOrPath);")
         .Close()
         .Line();
        WriteLoadAdapter(w, spec, plan, "global::PeftGen.Generated.LoRAAdapterLayers.Load(this, LinearLayers, QuantizationConfig, folder, adapter)", "The adapter folder.",
            [
                "Loads the Hugging Face PEFT adapter in <paramref name=\"folder\"/> onto this model as <paramref name=\"adapter\"/>, with",
                "the folder's <c>adapter_config.json</c>: first checks that the keys and shapes of <c>adapter_model.safetensors</c> fit",
                "this model's layers (nothing changes when they do not), then freezes the model, wraps the adapted layers",
                "(quantizing their base per <see cref=\"QuantizationConfig\"/>) and reads the weights. The model is owned by the result.",
            ],
            ("global::System.IO.InvalidDataException", "The config is invalid or does not fit this model, or keys and layers disagree; every mismatch is listed."));
    }

    /// <summary>
    /// Delta-LoRA's pair: the PEFT LoRA folder plus the base change the trainer's <c>DeltaLoRAUpdater</c> applied
    /// (<c>DeltaLoRAFile</c>). It replaces the plain LoRA pair, which would drop the base change and load a different model.
    /// </summary>
    private static void WriteDeltaSaveLoad(IndentedWriter w, GenerationSpec spec, LoRAPlan plan)
    {
        const string Updater = "global::PeftGen.Methods.DeltaLoRA.DeltaLoRAUpdater";
        w.Line("/// <summary>")
         .Line("/// Writes the Delta-LoRA result of <paramref name=\"peft\"/> to <paramref name=\"folder\"/> (<see cref=\"global::PeftGen.Methods.DeltaLoRA.DeltaLoRAFile\"/>): the")
         .Line("/// " + Unquoted(plan.Adapters[0].Adapter.Name) + " adapter as a Hugging Face PEFT LoRA folder (<c>adapter_config.json</c>, <c>adapter_model.safetensors</c>) and")
         .Line("/// <c>delta_lora_base.safetensors</c>, the base change the <see cref=\"" + Updater + "\"/> of <paramref name=\"trainer\"/>")
         .Line("/// applied, factored per layer. Each file is written in full under a temporary name, then renamed into place.")
         .Line("/// </summary>")
         .Line("/// <param name=\"peft\">The model with its adapters (from <see cref=\"ApplyAdapters\"/>).</param>")
         .Line("/// <param name=\"trainer\">The trainer from <see cref=\"CreateTrainer\"/>, which holds the Delta-LoRA updater.</param>")
         .Line("/// <param name=\"folder\">The adapter folder, created when missing.</param>")
         .Line("/// <param name=\"baseModelNameOrPath\">The config's <c>base_model_name_or_path</c>, or null.</param>")
         .Line("/// <exception cref=\"global::System.ArgumentException\"><paramref name=\"trainer\"/> has no Delta-LoRA updater among its after-step hooks.</exception>")
         .Member("public static void SaveAdapter(" + PeftModel(spec) + " peft, global::PeftGen.Training.Trainer trainer, string folder, string? baseModelNameOrPath = null)")
         .Open()
         .Line("global::System.ArgumentNullException.ThrowIfNull(trainer);")
         .Line("var updater = global::System.Linq.Enumerable.FirstOrDefault(global::System.Linq.Enumerable.OfType<" + Updater + ">(trainer.AfterStepHooks))")
         .Line("    ?? throw new global::System.ArgumentException(\"The trainer has no DeltaLoRAUpdater among its AfterStepHooks: create it with CreateTrainer, which adds one.\", nameof(trainer));")
         .Line("global::PeftGen.Methods.DeltaLoRA.DeltaLoRAFile.Save(peft, updater, folder, baseModelNameOrPath);")
         .Close()
         .Line();
        WriteLoadAdapter(w, spec, plan, "global::PeftGen.Methods.DeltaLoRA.DeltaLoRAFile.LoadInto(this, folder, adapter)", "The folder <see cref=\"SaveAdapter\"/> wrote.",
            [
                "Loads a Delta-LoRA folder onto this model: adds the saved base change to the float base weights, then wraps the adapted",
                "layers with the saved LoRA adapter as <paramref name=\"adapter\"/> (plain LoRA from then on). The files are checked against",
                "this model first, and nothing changes when they do not fit. The model is owned by the result.",
            ],
            ("global::System.IO.FileNotFoundException", "The folder has no <c>delta_lora_base.safetensors</c> (a plain LoRA folder)."),
            ("global::System.IO.InvalidDataException", "The files do not fit this model; every mismatch is listed."));
    }

    /// <summary><c>LoadAdapter(folder, adapter)</c>, one delegation to the runtime's <paramref name="call"/>.</summary>
    private static void WriteLoadAdapter(IndentedWriter w, GenerationSpec spec, LoRAPlan plan, string call, string folder, string[] summary,
        params (string Type, string When)[] exceptions)
    {
        w.Line("/// <summary>");
        foreach (var line in summary) w.Line("/// " + line);
        w.Line("/// </summary>")
         .Line("/// <param name=\"folder\">" + folder + "</param>")
         .Line("/// <param name=\"adapter\">The name the adapter gets.</param>");
        foreach (var (type, when) in exceptions) w.Line("/// <exception cref=\"" + type + "\">" + when + "</exception>");
        w.Member("public " + PeftModel(spec) + " LoadAdapter(string folder, string adapter = " + FirstName(plan) + ") =>")
         .Line("    " + call + ";");
    }

    private static void WriteRankCheck(IndentedWriter w, LoRAPlan plan)
    {
        if (plan.Adapters.All(a => a.Plan != null)) return;
        w.Line()
         .Line("// Ranks the compiler could not check (a shape or a list length is only known at run time), with PEFT003's text.")
         .Member("private void ThrowIfRankExceedsLayer(global::PeftGen.Methods.LoRA.LoRAConfig config)")
         .Open()
         .Line("foreach (var (path, layer) in LinearLayers())")
         .Open()
         .Line("if (!global::PeftGen.Generated.LoRAAdapterLayers.Adapts(config, path)) continue;")
         .Line("int rank = global::PeftGen.Generated.LoRAAdapterLayers.RankFor(config, path);")
         .Line("int limit = global::System.Math.Min(layer.InFeatures, layer.OutFeatures);")
         .Line("if (rank > limit)")
         .Open()
         .Line("throw new global::System.ArgumentException(string.Format(global::System.Globalization.CultureInfo.InvariantCulture,")
         .Line("    " + Quote(ShapeMessages.RankTooLarge) + ",")
         .Line("    rank, limit, path, layer.OutFeatures, layer.InFeatures));")
         .Close()
         .Close()
         .Close();
    }
}
