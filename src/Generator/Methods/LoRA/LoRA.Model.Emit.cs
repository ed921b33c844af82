using System.Collections.Generic;
using System.Linq;
using Microsoft.CodeAnalysis.CSharp;
using PeftGen.Generator.Emitting;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Methods;

/// <summary>LoRA's members about the model itself: loading it, predicting its training memory, and walking its layers.</summary>
internal sealed partial class LoRAMethod
{
    private const string LinearBase = "global::PeftGen.Nn.LinearBase";

    /// <summary>
    /// <c>FromPretrained</c>, for Llama models with a <c>(LlamaConfig)</c> constructor: <c>ModelLoader.Load</c> builds the
    /// model with empty weights and reads the checkpoint into the storage the adapters want, so the float32 model is never
    /// built. Delta-LoRA updates its base weights in float32, so its models load in float32.
    /// </summary>
    private static void WriteFromPretrained(IndentedWriter w, GenerationSpec spec, LoRAPlan plan)
    {
        var model = spec.Model;
        if (!model.IsLlama || !model.HasLlamaConfigConstructor) return;
        var first = plan.Adapters[0];
        bool delta = model.Companions.DeltaLoRA != null;
        bool quantized = model.Companions.Quantize != null;
        w.Line("/// <summary>")
         .Line("/// Loads the Hugging Face model folder or llama2.c checkpoint at <paramref name=\"modelPath\"/> as this model: its")
         .Line("/// constructor runs with empty weights, then each weight is read from the file, one tensor at a time, straight into");
        if (delta)
        {
            w.Line("/// float32 storage (Delta-LoRA adds to the base weights of the layers it adapts after each step, so none is stored")
             .Line("/// in 4 or 16 bits). Call <see cref=\"ApplyAdapters\"/> next.");
        }
        else if (quantized)
        {
            string targets = plan.Adapters.Count == 1 ? "the " + FirstName(plan) + " adapter targets" : "the adapters target";
            w.Line("/// the storage it keeps, so the float32 model is never built.")
             .Line("/// The layers " + targets + " are quantized to 4 bits as they are read (<see cref=\"QuantizationConfig\"/>); the other")
             .Line("/// linear and embedding weights keep the checkpoint's type (a 16-bit checkpoint's stay bfloat16 or float16, frozen),")
             .Line("/// and norms are float32. Call <see cref=\"ApplyAdapters\"/> next: it wraps the 4-bit layers as they are.");
        }
        else
        {
            w.Line("/// the storage it keeps, so the float32 model is never built.")
             .Line("/// Linear and embedding weights keep the checkpoint's type (a 16-bit checkpoint's stay bfloat16 or float16, frozen),")
             .Line("/// and norms are float32. Call <see cref=\"ApplyAdapters\"/> next.");
        }
        w.Line("/// </summary>")
         .Line("/// <param name=\"modelPath\">A Hugging Face folder (<c>config.json</c> and <c>model.safetensors</c>) or a llama2.c checkpoint (<c>.bin</c>).</param>")
         .Line("/// <returns>The model, with the checkpoint's configuration.</returns>")
         .Line("/// <exception cref=\"global::System.IO.FileNotFoundException\">Nothing is at <paramref name=\"modelPath\"/>, or the folder lacks its config or weights.</exception>")
         .Line("/// <exception cref=\"global::System.IO.InvalidDataException\">The files are malformed, or a parameter of this model is missing from them or has another shape.</exception>")
         .Member("public static " + model.FullyQualifiedName + " FromPretrained(string modelPath) =>");
        string load = "    global::PeftGen.IO.ModelLoader.Load(modelPath, config => new " + model.FullyQualifiedName + "(config)";
        if (delta)
        {
            w.Line(load + ");").Line();
            return;
        }
        string options = "        global::PeftGen.Methods.LoRA.PeftModel.LoadOptions(" + first.MemberPrefix + "LoRAConfig, QuantizationConfig)";
        w.Line(load + ",");
        if (!quantized || plan.Adapters.Count == 1)
        {
            w.Line(options + ");").Line();
            return;
        }
        w.Line(options + " with")
         .Line("        {")
         .Line("            // ApplyAdapters stores the layers of every adapter in 4 bits.");
        var adapts = plan.Adapters.Select(a => "global::PeftGen.Generated.LoRAAdapterLayers.Adapts(" + a.MemberPrefix + "LoRAConfig, path)").ToList();
        w.Line("            QuantizeLayer = path => " + adapts[0]);
        for (int i = 1; i < adapts.Count; i++) w.Line("                || " + adapts[i] + (i == adapts.Count - 1 ? "," : ""));
        w.Line("        });")
         .Line();
    }

    /// <summary>
    /// <c>EstimateTrainingMemory</c>, for Llama models whose config.json the generator read with every shape the estimate
    /// needs: the runtime's <c>MemoryModel.ForTraining</c> with the compile-time shapes and the first adapter.
    /// </summary>
    private static void WriteEstimateTrainingMemory(IndentedWriter w, GenerationSpec spec, LoRAPlan plan)
    {
        var model = spec.Model;
        if (!model.IsLlama || spec.Config is not { } c
            || c.HiddenSize is not { } hidden || c.IntermediateSize is not { } intermediate || c.NumHiddenLayers is not { } layers
            || c.NumAttentionHeads is not { } heads || c.VocabSize is not { } vocab)
            return;
        const string DType = "global::PeftGen.Tensors.DType";
        var first = plan.Adapters[0];
        bool delta = model.Companions.DeltaLoRA != null;
        string shapes = "the shapes of <c>" + Xml(model.Companions.ModelConfigPath ?? c.Path) + "</c> read at compile time:";
        w.Line("/// <summary>")
         .Line("/// Predicts the peak resident memory of training this model with the " + FirstName(plan) + " adapter (<see cref=\"" + first.MemberPrefix + "LoRAConfig\"/>)")
         .Line(model.Companions.Quantize != null
            ? "/// on 4-bit layers (<see cref=\"QuantizationConfig\"/>), from " + shapes
            : "/// on a base without 4-bit layers, from " + shapes)
         .Line("/// <see cref=\"global::PeftGen.Training.MemoryModel.ForTraining\"/> for them, with the weights stored as "
            + (model.HasLlamaConfigConstructor ? "<see cref=\"FromPretrained\"/>" : "<see cref=\"global::PeftGen.IO.ModelLoader\"/>") + " loads them.");
        if (plan.Adapters.Count > 1) w.Line("/// Only the active adapter is counted; the others add their own parameters, gradients and optimizer state.");
        w.Line("/// </summary>")
         .Line("/// <param name=\"batchSize\">Rows per micro-batch.</param>")
         .Line("/// <param name=\"sequenceLength\">Tokens per row.</param>")
         .Line("/// <param name=\"gradientCheckpointing\">Whether decoder layers recompute their activations in backward.</param>")
         .Line(delta
            ? "/// <param name=\"frozenWeightType\">The type frozen weights are kept in (float32: Delta-LoRA updates the base weights).</param>"
            : "/// <param name=\"frozenWeightType\">The type frozen weights are kept in: the checkpoint's 16-bit type, or float32.</param>")
         .Line("/// <param name=\"optimizer\">The optimizer (8-bit ones keep a quarter of the state).</param>")
         .Line("/// <returns>The estimate, by part; <c>Total</c> is the predicted peak in bytes.</returns>")
         .Member("public static global::PeftGen.Training.MemoryEstimate EstimateTrainingMemory(int batchSize, int sequenceLength, bool gradientCheckpointing,")
         .Line("    " + DType + " frozenWeightType = " + DType + (delta ? ".Float32" : ".BFloat16") + ",")
         .Line("    global::PeftGen.Training.OptimizerKind optimizer = global::PeftGen.Training.OptimizerKind.AdamW)")
         .Open()
         .Line("var config = new global::PeftGen.Models.Llama.LlamaConfig")
         .Open()
         .Line("HiddenSize = " + Int(hidden) + ",")
         .Line("IntermediateSize = " + Int(intermediate) + ",")
         .Line("NumHiddenLayers = " + Int(layers) + ",")
         .Line("NumAttentionHeads = " + Int(heads) + ",");
        if (c.NumKeyValueHeads is { } kv) w.Line("NumKeyValueHeads = " + Int(kv) + ",");
        w.Line("VocabSize = " + Int(vocab) + ",");
        if (c.HeadDim is { } headDim) w.Line("HeadDimOverride = " + Int(headDim) + ",");
        if (c.MaxPositionEmbeddings is { } positions) w.Line("MaxPositionEmbeddings = " + Int(positions) + ",");
        w.Line("TieWordEmbeddings = " + Bool(c.TieWordEmbeddings) + ",")
         .Close(";")
         .Line("return global::PeftGen.Training.MemoryModel.ForTraining(config, " + first.MemberPrefix + "LoRAConfig, QuantizationConfig, frozenWeightType,")
         .Line("    batchSize, sequenceLength, gradientCheckpointing, optimizer);")
         .Close()
         .Line();
    }

    /// <summary>The typed walk every other member builds on: each linear layer with its path, loops over module lists.</summary>
    private static void WriteLinearLayers(IndentedWriter w, ModelSpec model)
    {
        w.Line("/// <summary>")
         .Line("/// Every linear layer of this model with its PyTorch-style path, in module order, read through this class's members")
         .Line("/// (loops over module lists, no reflection). Adapted layers appear as their <see cref=\"global::PeftGen.Methods.LoRA.LoRALinear\"/> wrappers.")
         .Line("/// </summary>")
         .Member("public " + Generic + "IReadOnlyList<(string Path, " + LinearBase + " Layer)> LinearLayers()")
         .Open()
         .Line("var layers = new " + Generic + "List<(string Path, " + LinearBase + " Layer)>();");
        var open = new List<string>();
        foreach (var layer in model.Layers)
        {
            var prefixes = Enumerable.Range(0, layer.ListCounts.Count).Select(d => ModelPlanner.ListPrefix(layer.Path, d)).ToList();
            int common = 0;
            while (common < open.Count && common < prefixes.Count && open[common] == prefixes[common]) common++;
            while (open.Count > common)
            {
                w.Close();
                open.RemoveAt(open.Count - 1);
            }
            for (int d = common; d < prefixes.Count; d++)
            {
                string count = layer.ListCountAccesses.Count > d && layer.ListCountAccesses[d].Length > 0
                    ? Indexed(layer.ListCountAccesses[d])
                    : "global::System.Linq.Enumerable.Count(this.GetModule(" + PathExpression(prefixes[d].TrimEnd('.')) + ").Children())";
                w.Line("for (int i" + Int(d) + " = 0; i" + Int(d) + " < " + count + "; i" + Int(d) + "++)").Open();
                open.Add(prefixes[d]);
            }
            string access = layer.Access != null ? Indexed(layer.Access) : "this.GetModule(" + PathExpression(layer.Path) + ")";
            w.Line("Add(" + PathExpression(layer.Path) + ", " + access + ");");
        }
        foreach (var _ in open) w.Close();
        w.Line("return layers;")
         .Line()
         .Line("void Add(string path, global::PeftGen.Nn.Module? layer)")
         .Open()
         .Line("if (layer is " + LinearBase + " linear) layers.Add((path, linear));")
         .Close()
         .Close()
         .Line();
    }

    private static void WriteAdapterParameters(IndentedWriter w, LoRAPlan plan)
    {
        w.Line("/// <summary>")
         .Line("/// The tensors of adapter <paramref name=\"adapter\"/> by their in-memory paths, which are PEFT's")
         .Line("/// (<c>&lt;layer path&gt;.lora_A.&lt;adapter&gt;.weight</c>): each adapted layer's A [r, in], B [out, r] and DoRA")
         .Line("/// magnitude [out], in module order, read through <see cref=\"LinearLayers\"/>. The ones that train require gradients")
         .Line("/// while the adapter is active. Empty until <see cref=\"ApplyAdapters\"/> or <see cref=\"LoadAdapter\"/> wraps the layers.")
         .Line("/// </summary>")
         .Line("/// <param name=\"adapter\">The adapter's name.</param>")
         .Member("public " + Generic + "IReadOnlyList<(string Path, " + Tensor + " Tensor)> NamedAdapterParameters(string adapter = " + FirstName(plan) + ") =>")
         .Line("    global::PeftGen.Generated.LoRAAdapterLayers.NamedParameters(LinearLayers(), adapter);")
         .Line();
    }

    /// <summary>A C# template with its k-th "{i}" replaced by the loop variable i{k}.</summary>
    private static string Indexed(string template)
    {
        var parts = template.Split(new[] { "{i}" }, System.StringSplitOptions.None);
        var sb = new System.Text.StringBuilder(parts[0]);
        for (int k = 1; k < parts.Length; k++) sb.Append('i').Append(Int(k - 1)).Append(parts[k]);
        return sb.ToString();
    }

    /// <summary>A path template as a C# string: a literal, or an interpolated string with {i0}, {i1}… for list indices.</summary>
    private static string PathExpression(string template)
    {
        var parts = template.Split(new[] { "{i}" }, System.StringSplitOptions.None);
        if (parts.Length == 1) return Quote(template);
        var sb = new System.Text.StringBuilder("$\"").Append(Interpolated(parts[0]));
        for (int k = 1; k < parts.Length; k++) sb.Append("{i").Append(Int(k - 1)).Append('}').Append(Interpolated(parts[k]));
        return sb.Append('"').ToString();

        static string Interpolated(string text) => SymbolDisplay.FormatLiteral(text, quote: false).Replace("{", "{{").Replace("}", "}}");
    }
}
