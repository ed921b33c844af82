using System.Collections.Generic;
using PeftGen.Generator.Methods;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Emitting;

/// <summary>
/// How a method's trainer is wired by the generated <c>CreateTrainer</c>: the object <c>ApplyAdapters</c> returned (its
/// first parameter, or none) and what the method adds to the trainer.
/// </summary>
/// <param name="AdaptedType">The type of CreateTrainer's first parameter, or null when it takes none.</param>
/// <param name="AdaptedName">That parameter's name.</param>
internal sealed record TrainerWiring(string? AdaptedType, string? AdaptedName)
{
    /// <summary>The method always needs a trainer of its own, whatever its companions.</summary>
    public bool Always { get; init; }

    /// <summary>The adapted model's dropout generator is saved in checkpoints.</summary>
    public bool DropoutRng { get; init; }

    /// <summary>The documentation line that says what the trainer is built on, or null.</summary>
    public string? Summary { get; init; }

    /// <summary>The documentation line of what the adapted model runs after each step (its training hooks), or null.</summary>
    public string? AfterStep { get; init; }
}

/// <summary>
/// The members several methods share: the companions' settings (quantization, LoRA+, layer-wise learning rate, layer
/// drop), <c>ApplyAdapters</c>, <c>CreateTrainer</c>, the compile-time plan and count, and <c>SaveAdapter</c>/<c>LoadAdapter</c>
/// delegating to the method's runtime file format.
/// </summary>
internal static class Members
{
    /// <summary>
    /// Opens the method's config: <c>public static T Name { get; } = new T</c> and its initializer's brace, for the caller
    /// to write the settings and close with <c>};</c>.
    /// </summary>
    /// <param name="w">The writer.</param>
    /// <param name="what">Whose settings, for the summary: "VeRA adapter's".</param>
    /// <param name="attribute">The attribute they come from: "VeRA".</param>
    /// <param name="type">The runtime's config type, a <c>global::</c> name.</param>
    /// <param name="name">The property's name; the type's by default.</param>
    public static IndentedWriter OpenConfig(IndentedWriter w, string what, string attribute, string type, string? name = null) =>
        w.Line("/// <summary>The " + what + " settings, from this class's <c>[" + attribute + "]</c> attribute.</summary>")
         .Member("public static " + type + " " + (name ?? type.Substring(type.LastIndexOf('.') + 1)) + " { get; } = new " + type)
         .Open();

    /// <summary>The companions' members, those of the companions <paramref name="method"/> works with.</summary>
    public static void WriteCompanions(IndentedWriter w, GenerationSpec spec, MethodDefinition method, TrainerWiring trainer)
    {
        var companions = spec.Model.Companions;
        if (method.Supports(Companion.Quantize)) WriteQuantization(w, companions.Quantize);
        if (method.Supports(Companion.LoRAPlus) && companions.LoRAPlusRatio is { } ratio)
        {
            w.Line("/// <summary>")
             .Line("/// LoRA+ (from <c>[LoRAPlus]</c>): each B matrix trains with this many times the learning rate of A. Every trainer of an")
             .Line("/// adapted model of this class uses it as <see cref=\"global::PeftGen.Training.TrainerOptions.LoRAPlusRatio\"/>.")
             .Line("/// </summary>")
             .Member("public const float LoRAPlusRatio = " + Float((float)ratio) + ";")
             .Line();
        }
        if (companions.LayerwiseDecay is { } decay)
        {
            w.Line("/// <summary>")
             .Line("/// Layer-wise learning-rate decay γ (from <c>[LayerwiseLearningRate]</c>): decoder layer i of L trains at lr·γ^(L−1−i).")
             .Line(method.Supports(Companion.LayerwiseLearningRate)
                ? "/// Every trainer of an adapted model of this class uses it as <see cref=\"global::PeftGen.Training.TrainerOptions.LayerwiseLearningRateDecay\"/>."
                : "/// It does not apply to prompt learning, whose encoder trains outside the decoder layers (PEFT011): CreateTrainer does not pass it.")
             .Line("/// </summary>")
             .Member("public const float LayerwiseLearningRateDecay = " + Float((float)decay) + ";")
             .Line();
        }
        if (HasLayerDrop(spec.Model) && companions.LayerDrop is { } drop)
        {
            w.Line("/// <summary>The layer drop settings (from <c>[LayerDrop]</c>); <see cref=\"ApplyAdapters\"/> installs them.</summary>")
             .Member("public static global::PeftGen.Methods.LayerDrop.LayerDropConfig LayerDropConfig { get; } = new global::PeftGen.Methods.LayerDrop.LayerDropConfig")
             .Open()
             .Line("Probability = " + Float((float)drop.Probability) + ",");
            if (drop.Schedule.Value != 0) w.Line("Schedule = " + Enum(drop.Schedule) + ",");
            if (drop.Layers is { } layers) w.Line("Layers = " + Ints(layers) + ",");
            if (drop.Seed != 0) w.Line("Seed = " + Int(drop.Seed) + ",");
            w.Close(";").Line();
        }
        var declared = DeclaredSettings(spec);
        if (declared.Count > 0)
        {
            w.Line("/// <summary>The trainer settings this class's attributes declare: a trainer built on an adapted model of this class uses them in place of its options'.</summary>")
             .Member("global::PeftGen.Training.TrainerOptions global::PeftGen.Generated.IDeclaredTraining.ApplyTo(global::PeftGen.Training.TrainerOptions options) =>")
             .Line("    options with { " + string.Join(", ", declared) + " };")
             .Line();
        }
    }

    /// <summary>
    /// The <c>TrainerOptions</c> settings the class declares with <c>[LoRAPlus]</c> and <c>[LayerwiseLearningRate]</c>, where
    /// its method takes them (not prompt learning's, whose encoder has no depth: PEFT011): what its
    /// <c>IDeclaredTraining</c> implementation applies and a trainer without an adapted model is given.
    /// </summary>
    public static List<string> DeclaredSettings(GenerationSpec spec)
    {
        var companions = spec.Model.Companions;
        var method = spec.Model.Method.Definition;
        var settings = new List<string>();
        if (method.Supports(Companion.LoRAPlus) && companions.LoRAPlusRatio != null) settings.Add("LoRAPlusRatio = LoRAPlusRatio");
        if (method.Supports(Companion.LayerwiseLearningRate) && companions.LayerwiseDecay != null) settings.Add("LayerwiseLearningRateDecay = LayerwiseLearningRateDecay");
        return settings;
    }

    private static void WriteQuantization(IndentedWriter w, QuantizeSpec? q)
    {
        w.Line("/// <summary>How adapted layers store their base weights (from <c>[Quantize]</c>); null keeps them in full precision.</summary>");
        if (q == null)
        {
            w.Member("public static global::PeftGen.Quantization.QuantizationConfig? QuantizationConfig => null;").Line();
            return;
        }
        w.Member("public static global::PeftGen.Quantization.QuantizationConfig? QuantizationConfig { get; } =")
         .Line("    new global::PeftGen.Quantization.QuantizationConfig(" + Enum(q.Type) + ", DoubleQuant: " + Bool(q.DoubleQuant) + ", BlockSize: " + Int(q.BlockSize) + ");")
         .Line()
         .Line("/// <summary>The type 4-bit weights are dequantized to for the matrix multiply (from <c>[Quantize]</c>).</summary>")
         .Member("public const global::PeftGen.Tensors.DType QuantizationComputeType = " + Enum(q.ComputeType) + ";")
         .Line();
    }

    /// <summary>Layer drop is installed only on Llama models (PEFT026 reports it elsewhere).</summary>
    public static bool HasLayerDrop(ModelSpec model) => model.Companions.LayerDrop != null && model.IsLlama;

    /// <summary>Whether the method or its companions need trainer wiring, so <c>CreateTrainer</c> is emitted.</summary>
    public static bool NeedsTrainer(GenerationSpec spec, TrainerWiring trainer) =>
        trainer.Always || trainer.AfterStep != null || spec.Model.Companions is { LoRAPlusRatio: not null } or { LayerwiseDecay: not null }
        || HasLayerDrop(spec.Model);

    /// <summary>
    /// <c>CreateTrainer</c>, when the method or its companions need wiring. With an adapted model (LoRA, VeRA, prompt
    /// learning, sparse fine-tuning) it is the trainer of that model, which brings its parameter groups, random generators
    /// (dropout, layer drop) and hooks (Delta-LoRA, sparse masks) and takes the declared settings from this class
    /// (<c>IDeclaredTraining</c>); without one ((IA)³, bottleneck) the options get the declared settings and the layer
    /// drop's generator is checkpointed.
    /// </summary>
    public static void WriteCreateTrainer(IndentedWriter w, GenerationSpec spec, TrainerWiring trainer)
    {
        if (!NeedsTrainer(spec, trainer)) return;
        var model = spec.Model;
        string? name = trainer.AdaptedName;
        bool layerDrop = HasLayerDrop(model);
        bool decay = model.Companions.LayerwiseDecay != null && model.Method.Definition.Supports(Companion.LayerwiseLearningRate);
        w.Line("/// <summary>")
         .Line("/// Creates the trainer of this model with the wiring its attributes declare:");
        if (trainer.Summary != null) w.Line("/// " + trainer.Summary);
        if (model.Companions.LoRAPlusRatio != null) w.Line("/// the LoRA+ ratio (<see cref=\"LoRAPlusRatio\"/>),");
        if (decay) w.Line("/// the layer-wise learning-rate decay (<see cref=\"LayerwiseLearningRateDecay\"/>),");
        if (trainer.AfterStep is { } doc) w.Line("/// " + doc);
        if (trainer.DropoutRng || layerDrop)
            w.Line("/// the random generators of " + (trainer.DropoutRng && layerDrop ? "dropout and layer drop" : trainer.DropoutRng ? "dropout" : "layer drop") + " (saved in checkpoints),");
        w.Line("/// and the rest of <paramref name=\"options\"/> as given.")
         .Line("/// </summary>");
        if (name != null) w.Line("/// <param name=\"" + name + "\">The result of <see cref=\"ApplyAdapters\"/>.</param>");
        w.Line("/// <param name=\"loss\">Computes a batch's scalar loss with the model.</param>")
         .Line("/// <param name=\"train\">The training batches.</param>")
         .Line("/// <param name=\"options\">The training settings.</param>")
         .Line("/// <param name=\"eval\">Evaluation batches, or null.</param>");
        string parameters = (trainer.AdaptedType != null ? trainer.AdaptedType + " " + name + ", " : "")
            + "global::System.Func<global::PeftGen.Data.Batch, " + Tensor + "> loss, global::PeftGen.Data.IBatchSource train, "
            + "global::PeftGen.Training.TrainerOptions options, global::PeftGen.Data.IBatchSource? eval = null";
        w.Member("public global::PeftGen.Training.Trainer CreateTrainer(" + parameters + ")").Open();
        if (name != null) w.Line("global::System.ArgumentNullException.ThrowIfNull(" + name + ");");
        w.Line("global::System.ArgumentNullException.ThrowIfNull(options);");
        if (name != null)
        {
            w.Line("return new global::PeftGen.Training.Trainer(" + name + ", train, options, eval, loss);").Close().Line();
            return;
        }
        var settings = DeclaredSettings(spec);
        string options = settings.Count == 0 ? "options" : "options with { " + string.Join(", ", settings) + " }";
        string rngArgument = layerDrop ? ", new global::PeftGen.Tensors.Rng[] { ((global::PeftGen.Methods.LayerDrop.LayerDropper)this.Model.LayerSkip!).Rng }" : "";
        w.Line("var trainer = new global::PeftGen.Training.Trainer(this, loss, train, " + options + ", eval" + rngArgument + ");");
        w.Line("return trainer;").Close().Line();
    }

    /// <summary>
    /// The compile-time plan (one row per adapted layer or site), when every shape is known: <paramref name="rows"/> are
    /// the constructor arguments of the runtime's <paramref name="rowType"/> (a <c>global::</c> name) before its trainable-parameter count, and that
    /// count; <paramref name="columns"/> says what the arguments are.
    /// </summary>
    public static void WritePlan(IndentedWriter w, string rowType, string columns, IEnumerable<(string Arguments, long Trainable)>? rows)
    {
        if (rows == null) return;
        w.Line("/// <summary>")
         .Line("/// The adapted layers, known at compile time: " + columns + ".")
         .Line("/// Equals <c>ApplyAdapters().Plan()</c>.")
         .Line("/// </summary>")
         .Member("public static " + Generic + "IReadOnlyList<" + rowType + "> AdapterPlan { get; } = new " + rowType + "[]")
         .Open();
        foreach (var (arguments, trainable) in rows)
            w.Line("new " + rowType + "(" + arguments + ", " + Long(trainable) + "),");
        w.Close(";").Line();
    }

    /// <summary>The trainable-parameter count, when known at compile time; <paramref name="sum"/> is what it sums over.</summary>
    public static void WriteTrainableCount(IndentedWriter w, MethodPlan plan, string formula, string sum = "ApplyAdapters().Plan()")
    {
        if (plan.TrainableParameters is not { } count) return;
        w.Line("/// <summary>Parameters the method trains (" + formula + "), known at compile time; the sum over <c>" + sum + "</c>.</summary>")
         .Member("public const long TrainableParameterCount = " + Long(count) + ";")
         .Line();
    }

    /// <summary>
    /// <c>ApplyAdapters</c> of a method other than LoRA: one call to the runtime's <paramref name="create"/>, then layer drop
    /// where the class declares it. <paramref name="parameterDocs"/> documents each parameter: its name, a quote, '>', the text.
    /// </summary>
    public static void WriteApply(IndentedWriter w, ModelSpec model, string summary, string returnType, string parameters, string create, params string[] parameterDocs)
    {
        bool layerDrop = HasLayerDrop(model);
        w.Line("/// <summary>")
         .Line("/// " + summary + (layerDrop ? " Then installs layer drop (<see cref=\"LayerDropConfig\"/>)." : ""))
         .Line("/// </summary>");
        foreach (var doc in parameterDocs) w.Line("/// <param name=\"" + doc + "</param>");
        w.Line("/// <exception cref=\"global::System.ArgumentException\">A setting does not fit this model (a target matches no layer, a size is out of range).</exception>")
         .Member("public " + returnType + " ApplyAdapters(" + parameters + ")")
         .Open();
        if (layerDrop)
        {
            w.Line("var adapted = " + create + ";")
             .Line("global::PeftGen.Methods.LayerDrop.LayerDropper.Apply(this, LayerDropConfig);")
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
    public static void WriteSave(IndentedWriter w, string what, string format, string contents, string adaptedType, string adaptedName, bool named, string call)
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
         .Member("public static void SaveAdapter(" + adaptedType + " " + adaptedName + ", string folder, " + (named ? "string adapter = \"default\", " : "")
            + "string? baseModelNameOrPath = null) =>")
         .Line("    " + call + ";")
         .Line();
    }

    /// <summary><c>LoadAdapter</c> with LoRA's shape: a folder (and a name), checked before the model changes; one delegation.</summary>
    public static void WriteLoad(IndentedWriter w, string what, string with, string returnType, bool named, string call, string invalid)
    {
        w.Line("/// <summary>")
         .Line("/// Loads " + what)
         .Line("/// " + with)
         .Line("/// the files are checked against this model first, and nothing changes when they do not fit. The model is owned by the result.")
         .Line("/// </summary>")
         .Line("/// <param name=\"folder\">The adapter folder.</param>");
        if (named) w.Line("/// <param name=\"adapter\">The name the adapter gets.</param>");
        w.Line("/// <exception cref=\"" + InvalidData + "\">" + invalid + "</exception>")
         .Member("public " + returnType + " LoadAdapter(string folder" + (named ? ", string adapter = \"default\"" : "") + ") =>")
         .Line("    " + call + ";")
         .Line();
    }
}
