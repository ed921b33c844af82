using System.Globalization;
using System.Linq;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.ModelEmitter;

namespace PeftGen.Generator.Emitting;

/// <summary>
/// Writes the members of a class that declares a method other than LoRA: the method's configuration, the compile-time
/// plan and trainable-parameter count where shapes are known, <c>ApplyAdapters</c> returning the runtime's object for
/// the method, <c>CreateTrainer</c> where training needs wiring, and <c>SaveAdapter</c>/<c>LoadAdapter</c> delegating to
/// the method's runtime file format.
/// </summary>
internal static class MethodEmitter
{
    private const string Adapters = "global::PeftGen.Adapters.";
    private const string Formats = Adapters + "Formats.";
    private const string InvalidData = "global::System.IO.InvalidDataException";

    public static void Write(IndentedWriter w, GenerationSpec spec)
    {
        var model = spec.Model;
        var plan = spec.Method!;
        string self = model.FullyQualifiedName;
        switch (plan.Method)
        {
            case VeraSpec vera:
                WriteVeraConfig(w, vera);
                WriteQuantization(w, model.Quantize);
                WriteTrainingSettings(w, model);
                WritePlan(w, plan, "AdaptedLayer", "path, in and out features, rank, alpha and scaling (1), whether the base is 4-bit, and trainable parameters (out + r)",
                    r => Quote(r.Path) + ", " + Int(r.InFeatures) + ", " + Int(r.OutFeatures) + ", " + Int(r.Rank) + ", 1f, 1f, " + Bool(r.Flag),
                    "ApplyAdapters().Plan()");
                WriteTrainableCount(w, plan, "the b and d vectors: out + r per layer", "ApplyAdapters().Plan()");
                WriteApply(w, "Freezes this model and adds VeRA to the layers <see cref=\"VeraConfig\"/> targets"
                        + (model.Quantize != null ? ", storing their base weights in 4 bits" : "") + ".",
                    Adapters + "PeftModel<" + self + ">", "", Adapters + "PeftModel.Create(this, VeraConfig, QuantizationConfig)", model);
                WriteCreateTrainer(w, spec, Adapters + "PeftModel<" + self + ">", "peft");
                WriteSave(w, "VeRA adapter <paramref name=\"adapter\"/> of", "Hugging Face PEFT format (<see cref=\"" + Adapters + "VeraAdapterFile\"/>)",
                    "the b and d vectors of each layer and, when <see cref=\"VeraConfig\"/> saves them, the shared projections",
                    Adapters + "PeftModel<" + self + ">", "peft", named: true,
                    Adapters + "VeraAdapterFile.Save(peft, folder, adapter, baseModelNameOrPath)");
                WriteLoad(w, "the VeRA adapter in <paramref name=\"folder\"/> onto this model as <paramref name=\"adapter\"/>, with the folder's",
                    "<c>adapter_config.json</c> and projections, quantizing the adapted layers' bases per <see cref=\"QuantizationConfig\"/>;",
                    Adapters + "PeftModel<" + self + ">", named: true, Adapters + "VeraAdapterFile.LoadInto(this, folder, QuantizationConfig, adapter)",
                    "The config is invalid, keys and layers disagree (every mismatch listed), or the projections are missing.");
                break;
            case IA3Spec ia3:
                WriteIA3Config(w, ia3);
                WriteTrainingSettings(w, model);
                WritePlan(w, plan, "IA3AdaptedLayer", "path, in and out features, whether the vector scales the input (feed-forward), and trainable parameters",
                    r => Quote(r.Path) + ", " + Int(r.InFeatures) + ", " + Int(r.OutFeatures) + ", " + Bool(r.Flag),
                    "ApplyAdapters().Plan()");
                WriteTrainableCount(w, plan, "one vector per layer: in channels for feed-forward layers, out channels otherwise", "ApplyAdapters().Plan()");
                WriteApply(w, "Freezes this model and adds (IA)³ vectors to the layers <see cref=\"IA3Config\"/> targets.",
                    Adapters + "IA3Model<" + self + ">", "", Adapters + "IA3Model<" + self + ">.Create(this, IA3Config)", model);
                WriteCreateTrainer(w, spec, null, null);
                WriteSave(w, "(IA)³ adapter <paramref name=\"adapter\"/> of", "Hugging Face PEFT format (<see cref=\"" + Formats + "IA3AdapterFile\"/>)",
                    "one <c>ia3_l</c> vector per adapted layer", Adapters + "IA3Model<" + self + ">", "ia3", named: true,
                    Formats + "IA3AdapterFile.Save(ia3, folder, adapter, baseModelNameOrPath)");
                WriteLoad(w, "the (IA)³ adapter in <paramref name=\"folder\"/> onto this model as <paramref name=\"adapter\"/>, with the folder's",
                    "<c>adapter_config.json</c>;", Adapters + "IA3Model<" + self + ">", named: true,
                    Formats + "IA3AdapterFile.LoadInto(this, folder, adapter)",
                    "The config is invalid or does not fit this model, or keys and layers disagree; every mismatch is listed.");
                break;
            case PromptSpec prompt:
            {
                string configType = prompt.Kind switch
                {
                    PeftMethod.PromptTuning => "PromptTuningConfig",
                    PeftMethod.PrefixTuning => "PrefixTuningConfig",
                    _ => "PTuningConfig",
                };
                WritePromptConfig(w, prompt, configType);
                WriteTrainingSettings(w, model);
                string formula = prompt.Kind switch
                {
                    PeftMethod.PromptTuning => "n · hidden",
                    PeftMethod.PrefixTuning => prompt.Projection ? "the embedding [n, kv_dim] and the projection MLP" : "layers · 2 · n · kv_dim",
                    _ => "the embedding [n, hidden] and the encoder MLP",
                };
                WriteTrainableCount(w, plan, formula, "ApplyAdapters().ParameterCount(\"default\")");
                if (!model.IsLlama) break; // prompt learning needs a LlamaForCausalLM (PEFT026)
                bool text = prompt.Kind == PeftMethod.PromptTuning && prompt.InitText != null;
                WriteApply(w, "Adds " + Describe(prompt.Kind) + " to this model with <see cref=\"" + configType + "\"/>; the model stays frozen and the returned"
                        + " model trains only the virtual tokens' encoder.",
                    Adapters + "PromptLearningModel",
                    "global::PeftGen.Text.ITokenizer? tokenizer = null",
                    Adapters + "PeftModel.Create(this, " + configType + ", tokenizer)", model,
                    text ? "tokenizer\">The tokenizer of <see cref=\"PromptTuningConfig\"/>'s InitText; required." : "tokenizer\">A tokenizer (needed only for a text initialisation); may be null.");
                WriteCreateTrainer(w, spec, Adapters + "PromptLearningModel", "prompt");
                WriteSave(w, Describe(prompt.Kind) + " adapter <paramref name=\"adapter\"/> of", "Hugging Face PEFT format (<see cref=\"" + Formats + "PromptLearningAdapterFile\"/>)",
                    "the virtual tokens' embeddings as the encoder computes them, one tensor <c>prompt_embeddings</c>",
                    Adapters + "PromptLearningModel", "prompt", named: true,
                    Formats + "PromptLearningAdapterFile.Save(prompt, folder, adapter, baseModelNameOrPath)");
                WriteLoad(w, "the " + Describe(prompt.Kind) + " adapter in <paramref name=\"folder\"/> onto this model as <paramref name=\"adapter\"/>, with the",
                    "folder's <c>adapter_config.json</c>, active and frozen (PEFT's inference mode);", Adapters + "PromptLearningModel", named: true,
                    Formats + "PromptLearningAdapterFile.LoadInto(this, folder, adapter)",
                    "The config is invalid or describes another model, or the tensor is missing or misshapen.");
                break;
            }
            case BottleneckSpec bottleneck:
                WriteBottleneckConfig(w, bottleneck);
                WriteTrainingSettings(w, model);
                WritePlan(w, plan, "BottleneckSite", "path, hidden size d, bottleneck width m, and trainable parameters",
                    r => Quote(r.Path) + ", " + Int(r.InFeatures) + ", " + Int(r.Rank), "ApplyAdapters().Plan()");
                WriteTrainableCount(w, plan, bottleneck.Bias ? "2·d·m + d + m per adapter" : "2·d·m per adapter", "ApplyAdapters().Plan()");
                WriteApply(w, "Freezes this model and inserts bottleneck adapters into its decoder layers per <see cref=\"BottleneckConfig\"/>.",
                    Adapters + "BottleneckModel<" + self + ">", "", Adapters + "BottleneckModel<" + self + ">.Create(this, BottleneckConfig)", model);
                WriteCreateTrainer(w, spec, null, null);
                WriteSave(w, "the bottleneck adapters of", "PeftGen's PEFT-style format (<see cref=\"" + Adapters + "BottleneckAdapterFile\"/>, <c>peft_type</c> BOTTLENECK)",
                    "each adapter's down and up projections", Adapters + "BottleneckModel<" + self + ">", "bottleneck", named: false,
                    Adapters + "BottleneckAdapterFile.Save(bottleneck, folder, baseModelNameOrPath)");
                WriteLoad(w, "the bottleneck adapters in <paramref name=\"folder\"/> into this model's decoder layers, with the folder's",
                    "<c>adapter_config.json</c>;", Adapters + "BottleneckModel<" + self + ">", named: false,
                    Adapters + "BottleneckAdapterFile.LoadInto(this, folder)",
                    "The config is invalid, or keys and adapters disagree; every mismatch is listed.");
                break;
            case SparseSpec sparse:
                WriteSparseConfig(w, sparse);
                WriteTrainingSettings(w, model);
                WriteApply(w, "Chooses the entries of this model that train per <see cref=\"SparseFineTuningConfig\"/> and freezes everything else;"
                        + " train with <see cref=\"CreateTrainer\"/>, which attaches the gradient masks.",
                    Adapters + "SparseFineTuning",
                    "global::System.Func<global::PeftGen.Data.Batch, global::PeftGen.Tensors.Tensor>? loss = null, global::PeftGen.Data.IBatchSource? calibration = null",
                    Adapters + "SparseFineTuning.Create(this, SparseFineTuningConfig, loss, calibration)", model,
                    "loss\">Computes a calibration batch's loss (needed when the score is not None).",
                    "calibration\">The calibration batches (needed when the score is not None).");
                WriteCreateTrainer(w, spec, Adapters + "SparseFineTuning", "sparse");
                WriteSparseSaveLoad(w);
                break;
        }
    }

    private static string Describe(PeftMethod kind) => kind switch
    {
        PeftMethod.PromptTuning => "prompt tuning",
        PeftMethod.PrefixTuning => "prefix tuning",
        _ => "P-tuning",
    };

    private static void WriteVeraConfig(IndentedWriter w, VeraSpec v)
    {
        w.Line("/// <summary>The VeRA adapter's settings, from this class's <c>[VeRA]</c> attribute.</summary>")
         .Line("public static " + Adapters + "VeraConfig VeraConfig { get; } = new " + Adapters + "VeraConfig")
         .Open()
         .Line("Rank = " + Int(v.Rank) + ",")
         .Line("Targets = " + Targets(v.Targets) + ",");
        if (v.DInitial != 0.1) w.Line("DInitial = " + Float((float)v.DInitial) + ",");
        if (v.ProjectionSeed != 0) w.Line("ProjectionSeed = " + Int(v.ProjectionSeed) + ",");
        if (!v.SaveProjection) w.Line("SaveProjection = false,");
        if (v.Dropout != 0) w.Line("Dropout = " + Float((float)v.Dropout) + ",");
        if (v.Exclude.Count > 0) w.Line("Exclude = new string[] { " + string.Join(", ", v.Exclude.Select(Quote)) + " },");
        if (v.Layers is { } layers) w.Line("Layers = new int[] { " + string.Join(", ", layers.Select(Int)) + " },");
        if (v.Seed != 0) w.Line("Seed = " + Int(v.Seed) + ",");
        w.Close(";").Line();
    }

    private static void WriteIA3Config(IndentedWriter w, IA3Spec a)
    {
        w.Line("/// <summary>The (IA)³ adapter's settings, from this class's <c>[IA3]</c> attribute.</summary>")
         .Line("public static " + Adapters + "IA3Config IA3Config { get; } = new " + Adapters + "IA3Config")
         .Open()
         .Line("Targets = " + Targets(a.Targets) + ",")
         .Line("FeedForward = " + (a.FeedForward is { } ff ? Targets(ff) : "null") + ",");
        if (a.Exclude.Count > 0) w.Line("Exclude = new string[] { " + string.Join(", ", a.Exclude.Select(Quote)) + " },");
        if (!a.InitWeights) w.Line("InitWeights = false,");
        if (a.Seed != 0) w.Line("Seed = " + Int(a.Seed) + ",");
        w.Close(";").Line();
    }

    private static void WritePromptConfig(IndentedWriter w, PromptSpec p, string configType)
    {
        w.Line("/// <summary>The " + Describe(p.Kind) + " settings, from this class's <c>[" + Attribute(p.Kind) + "]</c> attribute.</summary>")
         .Line("public static " + Adapters + configType + " " + configType + " { get; } = new " + Adapters + configType)
         .Open()
         .Line("NumVirtualTokens = " + Int(p.VirtualTokens) + ",");
        if (p.InitText != null)
        {
            w.Line("Init = " + Adapters + "PromptTuningInit.Text,")
             .Line("InitText = " + Quote(p.InitText) + ",");
        }
        if (p.Projection) w.Line("PrefixProjection = true,");
        if (p.EncoderHiddenSize != 0) w.Line("EncoderHiddenSize = " + Int(p.EncoderHiddenSize) + ",");
        if (p.Kind == PeftMethod.PTuning && p.EncoderType.Value != 0) w.Line("EncoderType = " + Enum(p.EncoderType) + ",");
        if (p.Seed != 0) w.Line("Seed = " + Int(p.Seed) + ",");
        w.Close(";").Line();
    }

    private static string Attribute(PeftMethod kind) => kind switch
    {
        PeftMethod.PromptTuning => "PromptTuning",
        PeftMethod.PrefixTuning => "PrefixTuning",
        _ => "PTuning",
    };

    private static void WriteBottleneckConfig(IndentedWriter w, BottleneckSpec b)
    {
        w.Line("/// <summary>The bottleneck adapters' settings, from this class's <c>[Bottleneck]</c> attribute.</summary>")
         .Line("public static " + Adapters + "BottleneckConfig BottleneckConfig { get; } = new " + Adapters + "BottleneckConfig")
         .Open();
        if (b.Size != 0) w.Line("BottleneckSize = " + Int(b.Size) + ",");
        else if (b.ReductionFactor != 16) w.Line("ReductionFactor = " + Int(b.ReductionFactor) + ",");
        if (b.Placement.Value != 2) w.Line("Placement = " + Enum(b.Placement) + ",");
        if (b.Activation.Value != 0) w.Line("Activation = " + Enum(b.Activation) + ",");
        if (!b.Bias) w.Line("Bias = false,");
        if (b.Layers is { } layers) w.Line("Layers = new int[] { " + string.Join(", ", layers.Select(Int)) + " },");
        if (b.Seed != 0) w.Line("Seed = " + Int(b.Seed) + ",");
        w.Close(";").Line();
    }

    private static void WriteSparseConfig(IndentedWriter w, SparseSpec s)
    {
        w.Line("/// <summary>The sparse fine-tuning settings, from this class's <c>[SparseFineTuning]</c> attribute.</summary>")
         .Line("public static " + Adapters + "SparseFineTuningConfig SparseFineTuningConfig { get; } = new " + Adapters + "SparseFineTuningConfig")
         .Open()
         .Line("Fraction = " + Float((float)s.Fraction) + ",")
         .Line("Targets = " + Targets(s.Targets) + ",");
        if (s.Score.Value != 1) w.Line("Score = " + Enum(s.Score) + ",");
        if (s.CalibrationBatches != 4) w.Line("CalibrationBatches = " + Int(s.CalibrationBatches) + ",");
        w.Close(";").Line();
    }

    private static void WritePlan(IndentedWriter w, MethodPlanSpec plan, string rowType, string columns,
        System.Func<MethodPlanRowSpec, string> arguments, string equals)
    {
        if (plan.Rows is not { } rows) return;
        w.Line("/// <summary>")
         .Line("/// The adapted layers, known at compile time: " + columns + ".")
         .Line("/// Equals <c>" + equals + "</c>.")
         .Line("/// </summary>")
         .Line("public static global::System.Collections.Generic.IReadOnlyList<" + Adapters + rowType + "> AdapterPlan { get; } = new " + Adapters + rowType + "[]")
         .Open();
        foreach (var row in rows)
            w.Line("new " + Adapters + rowType + "(" + arguments(row) + ", " + row.TrainableParameters.ToString(CultureInfo.InvariantCulture) + "L),");
        w.Close(";").Line();
    }

    private static void WriteTrainableCount(IndentedWriter w, MethodPlanSpec plan, string formula, string equals)
    {
        if (plan.TrainableParameters is not { } count) return;
        w.Line("/// <summary>Parameters the method trains (" + formula + "), known at compile time; the sum over <c>" + equals + "</c>.</summary>")
         .Line("public const long TrainableParameterCount = " + count.ToString(CultureInfo.InvariantCulture) + "L;")
         .Line();
    }

    private static void WriteApply(IndentedWriter w, string summary, string returnType, string parameters, string create, ModelSpec model, params string[] parameterDocs)
    {
        bool layerDrop = HasLayerDrop(model);
        w.Line("/// <summary>")
         .Line("/// " + summary + (layerDrop ? " Then installs layer drop (<see cref=\"LayerDropConfig\"/>)." : ""))
         .Line("/// </summary>");
        foreach (var doc in parameterDocs) w.Line("/// <param name=\"" + doc + "</param>");
        w.Line("/// <exception cref=\"global::System.ArgumentException\">A setting does not fit this model (a target matches no layer, a size is out of range).</exception>")
         .Line("public " + returnType + " ApplyAdapters(" + parameters + ")")
         .Open();
        if (layerDrop)
        {
            w.Line("var adapted = " + create + ";")
             .Line(Adapters + "LayerDrop.Apply(this, LayerDropConfig);")
             .Line("return adapted;");
        }
        else
        {
            w.Line("return " + create + ";");
        }
        w.Close().Line();
    }

    /// <summary>
    /// <c>SaveAdapter</c> with LoRA's shape: the object <c>ApplyAdapters</c> returned, a folder, the adapter's name where the
    /// method has named adapters, and the config's <c>base_model_name_or_path</c>; one delegation to the runtime.
    /// </summary>
    private static void WriteSave(IndentedWriter w, string what, string format, string contents, string adaptedType, string adaptedName, bool named, string call)
    {
        w.Line("/// <summary>")
         .Line("/// Writes " + what + " <paramref name=\"" + adaptedName + "\"/> to <paramref name=\"folder\"/> in")
         .Line("/// " + format + ":")
         .Line("/// <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> with " + contents + ".")
         .Line("/// Both files are written in full under temporary names, then renamed into place.")
         .Line("/// </summary>")
         .Line("/// <param name=\"" + adaptedName + "\">The adapted model (from <see cref=\"ApplyAdapters\"/> or <see cref=\"LoadAdapter\"/>).</param>")
         .Line("/// <param name=\"folder\">The adapter folder, created when missing.</param>");
        if (named) w.Line("/// <param name=\"adapter\">The adapter to save.</param>");
        w.Line("/// <param name=\"baseModelNameOrPath\">The config's <c>base_model_name_or_path</c>, or null.</param>")
         .Line("public static void SaveAdapter(" + adaptedType + " " + adaptedName + ", string folder, " + (named ? "string adapter = \"default\", " : "")
            + "string? baseModelNameOrPath = null) =>")
         .Line("    " + call + ";")
         .Line();
    }

    /// <summary><c>LoadAdapter</c> with LoRA's shape: a folder (and a name), checked before the model changes; one delegation.</summary>
    private static void WriteLoad(IndentedWriter w, string what, string with, string returnType, bool named, string call, string invalid)
    {
        w.Line("/// <summary>")
         .Line("/// Loads " + what)
         .Line("/// " + with)
         .Line("/// the files are checked against this model first, and nothing changes when they do not fit. The model is owned by the result.")
         .Line("/// </summary>")
         .Line("/// <param name=\"folder\">The adapter folder.</param>");
        if (named) w.Line("/// <param name=\"adapter\">The name the adapter gets.</param>");
        w.Line("/// <exception cref=\"" + InvalidData + "\">" + invalid + "</exception>")
         .Line("public " + returnType + " LoadAdapter(string folder" + (named ? ", string adapter = \"default\"" : "") + ") =>")
         .Line("    " + call + ";")
         .Line();
    }

    /// <summary>
    /// Sparse fine-tuning saves no adapter but a sparse delta of the base weights (<c>SparseDelta</c>, PeftGen's own
    /// safetensors format, no config); the generated pair keeps the folder shape with the file name in a constant, and
    /// loading adds the delta to this model's weights (returning it, so that <c>ApplyTo(model, -1)</c> takes it back out).
    /// </summary>
    private static void WriteSparseSaveLoad(IndentedWriter w)
    {
        const string Delta = Adapters + "SparseDelta";
        w.Line("/// <summary>The file <see cref=\"SaveAdapter\"/> writes in its folder: the sparse delta, in PeftGen's own safetensors format.</summary>")
         .Line("public const string SparseDeltaFileName = \"sparse_delta.safetensors\";")
         .Line()
         .Line("/// <summary>")
         .Line("/// Writes the change of every trainable entry of <paramref name=\"sparse\"/> (<see cref=\"" + Adapters + "SparseFineTuning.Delta\"/>) to")
         .Line("/// <paramref name=\"folder\"/> as <see cref=\"SparseDeltaFileName\"/> (<see cref=\"" + Delta + "\"/>'s format: indices, values and")
         .Line("/// shape per parameter), written in full under a temporary name, then renamed into place. Sparse fine-tuning has no PEFT")
         .Line("/// adapter config, so there is no <c>adapter_config.json</c>.")
         .Line("/// </summary>")
         .Line("/// <param name=\"sparse\">The selection from <see cref=\"ApplyAdapters\"/>, after training.</param>")
         .Line("/// <param name=\"folder\">The folder, created when missing.</param>")
         .Line("public static void SaveAdapter(" + Adapters + "SparseFineTuning sparse, string folder)")
         .Open()
         .Line("global::System.ArgumentNullException.ThrowIfNull(sparse);")
         .Line("global::System.IO.Directory.CreateDirectory(folder);")
         .Line("sparse.Delta().Save(global::System.IO.Path.Combine(folder, SparseDeltaFileName));")
         .Close()
         .Line()
         .Line("/// <summary>")
         .Line("/// Adds the sparse delta in <paramref name=\"folder\"/> (<see cref=\"SparseDeltaFileName\"/>) to this model's weights; every")
         .Line("/// parameter is checked first, and nothing changes when one is missing or has another shape. Returns the delta:")
         .Line("/// <c>ApplyTo(model, -1)</c> takes it back out.")
         .Line("/// </summary>")
         .Line("/// <param name=\"folder\">The folder <see cref=\"SaveAdapter\"/> wrote.</param>")
         .Line("/// <exception cref=\"" + InvalidData + "\">The file is not a sparse delta, or it does not fit this model; every mismatch is listed.</exception>")
         .Line("public " + Delta + " LoadAdapter(string folder)")
         .Open()
         .Line("var delta = " + Delta + ".Load(global::System.IO.Path.Combine(folder, SparseDeltaFileName));")
         .Line("delta.ApplyTo(this);")
         .Line("return delta;")
         .Close()
         .Line();
    }
}
