using System.Collections.Concurrent;
using System.Globalization;
using System.Reflection;
using System.Runtime.Loader;
using Microsoft.CodeAnalysis.CSharp.Testing;
using Microsoft.CodeAnalysis.Testing;
using PeftGen.Analyzers;
using PeftGen.Generator.Spec;
using PeftGen.Generator.Tests.TestSupport;
using PeftGen.Testing;

namespace PeftGen.Generator.Tests;

/// <summary>
/// Runs the generated members on real models: the typed layer walk against the runtime's module tree, the adapter
/// parameters against the trainable ones, PEFT-format SaveAdapter/LoadAdapter against PeftAdapterFile in both
/// directions, and the run-time rank check against the compile-time PEFT003 text.
/// </summary>
public class GeneratedAdapterCodeTests
{
    // Appended to LlamaAllOptions' source (namespace Demo): QLoRA (NF4) + DoRA + rsLoRA over layers 0 and 2, k_proj excluded.
    private const string LlamaProbe = """

        internal static class Probe
        {
            private static global::PeftGen.Models.Llama.LlamaConfig Config(int layers) => new()
            {
                HiddenSize = 64, IntermediateSize = 172, NumHiddenLayers = layers, NumAttentionHeads = 8, NumKeyValueHeads = 4,
                VocabSize = 512, RmsNormEps = 1e-5f,
            };

            private static float[] Logits(StoryTeller model)
            {
                model.Eval();
                using var noGrad = global::PeftGen.Autograd.GradMode.Disable();
                using var scope = global::PeftGen.Tensors.TensorScope.Begin();
                int[] ids = { 1, 5, 9, 200, 33, 7, 411, 2 };
                return model.Forward(ids, 1, ids.Length).ToArray();
            }

            private static double MaxDiff(float[] a, float[] b)
            {
                if (a.Length != b.Length) return double.PositiveInfinity;
                double max = 0;
                for (int i = 0; i < a.Length; i++) max = global::System.Math.Max(max, global::System.Math.Abs((double)a[i] - b[i]));
                return max;
            }

            private static bool SameBytes(string a, string b) =>
                global::System.Linq.Enumerable.SequenceEqual(global::System.IO.File.ReadAllBytes(a), global::System.IO.File.ReadAllBytes(b));

            public static global::System.Collections.Generic.Dictionary<string, object> RoundTrip(string folder)
            {
                var facts = new global::System.Collections.Generic.Dictionary<string, object>();
                string generated = global::System.IO.Path.Combine(folder, "generated"), runtime = global::System.IO.Path.Combine(folder, "runtime");
                var source = new StoryTeller(Config(3));
                using var peft = source.ApplyAdapters();
                var random = new global::System.Random(7);
                foreach (var (_, tensor) in source.NamedAdapterParameters())
                {
                    var values = tensor.AsSpan();
                    for (int i = 0; i < values.Length; i++) values[i] += (float)(random.NextDouble() - 0.5) * 0.2f;
                }
                facts["named"] = string.Join("\n", global::System.Linq.Enumerable.Select(source.NamedAdapterParameters(), p => p.Path));
                facts["trainable"] = string.Join("\n", global::System.Linq.Enumerable.Select(
                    global::System.Linq.Enumerable.Where(source.NamedParameters(), p => p.Tensor.RequiresGrad), p => p.Path));
                facts["count"] = global::System.Linq.Enumerable.Sum(source.NamedAdapterParameters(), p => p.Tensor.Count);

                StoryTeller.SaveAdapter(peft, generated);
                global::PeftGen.Methods.LoRA.PeftAdapterFile.Save(peft, runtime);
                facts["sameWeights"] = SameBytes(global::System.IO.Path.Combine(generated, "adapter_model.safetensors"), global::System.IO.Path.Combine(runtime, "adapter_model.safetensors"));
                facts["sameConfig"] = SameBytes(global::System.IO.Path.Combine(generated, "adapter_config.json"), global::System.IO.Path.Combine(runtime, "adapter_config.json"));
                using (var file = global::PeftGen.IO.SafetensorsFile.Open(global::System.IO.Path.Combine(generated, "adapter_model.safetensors")))
                    facts["fileKeys"] = string.Join("\n", file.TensorNames);
                facts["staticKeys"] = string.Join("\n", StoryTeller.AdapterFileKeys);

                var expected = Logits(source);
                float[] baseline;
                using (peft.DisableAdapters()) baseline = Logits(source);
                facts["adapterEffect"] = MaxDiff(expected, baseline);

                var viaGenerated = new StoryTeller(Config(3));
                using (viaGenerated.LoadAdapter(runtime)) facts["generatedLoad"] = MaxDiff(expected, Logits(viaGenerated));
                var viaRuntime = new StoryTeller(Config(3));
                using (global::PeftGen.Methods.LoRA.PeftAdapterFile.LoadInto(viaRuntime, generated, StoryTeller.QuantizationConfig))
                    facts["runtimeLoad"] = MaxDiff(expected, Logits(viaRuntime));

                using var shallow = new StoryTeller(Config(2));
                try
                {
                    shallow.LoadAdapter(runtime);
                    facts["mismatch"] = "loaded";
                }
                catch (global::System.IO.InvalidDataException e)
                {
                    facts["mismatch"] = e.Message;
                }
                facts["untouched"] = !global::System.Linq.Enumerable.Any(shallow.LinearLayers(), l => l.Layer is global::PeftGen.Methods.LoRA.LoRALinear)
                    && global::System.Linq.Enumerable.All(shallow.NamedParameters(), p => p.Tensor.RequiresGrad);
                return facts;
            }
        }
        """;

    // Appended to LlamaAllOptions' source (namespace Demo): the generated FromPretrained against the float model plus
    // ApplyAdapters, and the generated EstimateTrainingMemory against the runtime's MemoryModel and the loaded model.
    private const string LoadProbe = """

        internal static class Probe
        {
            private static global::PeftGen.Models.Llama.LlamaConfig Config() => new()
            {
                HiddenSize = 64, IntermediateSize = 172, NumHiddenLayers = 3, NumAttentionHeads = 8, NumKeyValueHeads = 4,
                VocabSize = 512, RmsNormEps = 1e-5f,
            };

            private static float[] Logits(StoryTeller model)
            {
                model.Eval();
                using var noGrad = global::PeftGen.Autograd.GradMode.Disable();
                using var scope = global::PeftGen.Tensors.TensorScope.Begin();
                int[] ids = { 1, 5, 9, 200, 33, 7, 411, 2 };
                return model.Forward(ids, 1, ids.Length).ToArray();
            }

            // The same deterministic values on every adapter tensor, so B ≠ 0 and the adapters change the logits.
            private static void Perturb(StoryTeller model)
            {
                var random = new global::System.Random(7);
                foreach (var (_, tensor) in model.NamedAdapterParameters())
                {
                    var values = tensor.AsSpan();
                    for (int i = 0; i < values.Length; i++) values[i] += (float)(random.NextDouble() - 0.5) * 0.2f;
                }
            }

            private static string Linears(StoryTeller model, bool fourBit) => string.Join("\n", global::System.Linq.Enumerable.Select(
                global::System.Linq.Enumerable.Where(model.NamedModules(), m => fourBit
                    ? m.Module is global::PeftGen.Quantization.Linear4Bit
                    : m.Module is global::PeftGen.Nn.Linear), m => m.Path));

            // Bytes of the weights as the model holds them: 4-bit codes and scales, and every other parameter in its type.
            private static long[] WeightBytes(StoryTeller model)
            {
                long fourBit = 0, other = 0;
                foreach (var (_, module) in model.NamedModules())
                {
                    if (module is global::PeftGen.Quantization.Linear4Bit q) fourBit += q.Weight.StorageBytes;
                    foreach (var (_, p) in module.OwnParameters()) other += p.Count * global::PeftGen.Tensors.DTypeExtensions.ElementSize(p.DType);
                }
                return new[] { fourBit, other };
            }

            public static global::System.Collections.Generic.Dictionary<string, object> Load(string folder)
            {
                var facts = new global::System.Collections.Generic.Dictionary<string, object>();
                string float32 = global::System.IO.Path.Combine(folder, "float32"), bfloat16 = global::System.IO.Path.Combine(folder, "bfloat16");
                using (var source = new StoryTeller(Config()))
                {
                    global::PeftGen.IO.HuggingFaceLlama.Save(source, float32);
                    global::PeftGen.IO.HuggingFaceLlama.Save(source, bfloat16, global::PeftGen.Tensors.DType.BFloat16);
                }
                facts["planned"] = string.Join("\n", global::System.Linq.Enumerable.Select(StoryTeller.AdapterPlan, l => l.Path));

                var loaded = StoryTeller.FromPretrained(float32);
                facts["fourBitAfterLoad"] = Linears(loaded, fourBit: true);
                facts["floatAfterLoad"] = Linears(loaded, fourBit: false);
                using var peft = loaded.ApplyAdapters();
                facts["plan"] = string.Join("\n", peft.Plan());
                facts["compileTimePlan"] = string.Join("\n", StoryTeller.AdapterPlan);
                Perturb(loaded);

                var reference = global::PeftGen.IO.ModelLoader.Load(float32, config => new StoryTeller(config));
                facts["referenceFourBitAfterLoad"] = Linears(reference, fourBit: true);
                using var referencePeft = reference.ApplyAdapters();
                Perturb(reference);
                var expected = Logits(reference);
                facts["logitsEqual"] = global::System.Linq.Enumerable.SequenceEqual(expected, Logits(loaded));
                float[] baseline;
                using (referencePeft.DisableAdapters()) baseline = Logits(reference);
                double effect = 0;
                for (int i = 0; i < expected.Length; i++) effect = global::System.Math.Max(effect, global::System.Math.Abs((double)expected[i] - baseline[i]));
                facts["adapterEffect"] = effect;

                // A bfloat16 checkpoint: frozen weights stay 16-bit; the estimate counts the weights as the model holds them.
                using var sixteen = StoryTeller.FromPretrained(bfloat16);
                facts["embeddingType"] = sixteen.Model.EmbedTokens.Weight.DType.ToString();
                facts["weightBytes"] = WeightBytes(sixteen);
                var estimate = StoryTeller.EstimateTrainingMemory(2, 16, gradientCheckpointing: true);
                facts["estimatedWeightBytes"] = new[] { estimate.FourBitWeights, estimate.FrozenWeights };
                var (config, weightType) = global::PeftGen.IO.ModelLoader.Inspect(bfloat16);
                facts["runtimeEstimate"] = global::PeftGen.Training.MemoryModel.ForTraining(config, StoryTeller.LoRAConfig, StoryTeller.QuantizationConfig,
                    weightType, 2, 16, true).ToString();
                facts["estimate"] = estimate.ToString();
                facts["sameEstimate"] = estimate == global::PeftGen.Training.MemoryModel.ForTraining(config, StoryTeller.LoRAConfig,
                    StoryTeller.QuantizationConfig, weightType, 2, 16, true);
                return facts;
            }
        }
        """;

    // Appended to the DeltaLoRA case's source (namespace Demo).
    private const string DeltaLoadProbe = """

        internal static class Probe
        {
            public static string Load(string folder)
            {
                using (var source = new MovingChat(new global::PeftGen.Models.Llama.LlamaConfig
                {
                    HiddenSize = 64, IntermediateSize = 172, NumHiddenLayers = 3, NumAttentionHeads = 8, NumKeyValueHeads = 4, VocabSize = 512,
                }))
                {
                    global::PeftGen.IO.HuggingFaceLlama.Save(source, folder, global::PeftGen.Tensors.DType.BFloat16);
                }
                using var peft = MovingChat.FromPretrained(folder).ApplyAdapters();
                var updater = global::PeftGen.Methods.DeltaLoRA.DeltaLoRAUpdater.Create(peft);
                updater.AfterStep(1000); // past StartStep: adds to the float32 base weights
                return string.Join(",", global::System.Linq.Enumerable.Distinct(global::System.Linq.Enumerable.Select(
                    peft.Model.NamedParameters(), p => p.Tensor.DType.ToString())));
            }
        }
        """;

    // Appended to UserModuleRunTimeShapes' source (namespace Demo).
    private const string ResizableProbe = """

        internal static class Probe
        {
            public static string Apply(int width, int depth, bool withExtra)
            {
                using var model = new Resizable(width, depth, withExtra);
                try
                {
                    using var peft = model.ApplyAdapters();
                    return string.Join(",", global::System.Linq.Enumerable.Select(model.LinearLayers(),
                        l => l.Path + (l.Layer is global::PeftGen.Methods.LoRA.LoRALinear ? "*" : "")));
                }
                catch (global::System.ArgumentException e)
                {
                    return "error: " + e.Message;
                }
            }

            public static string RuntimeLinears(int width, int depth, bool withExtra)
            {
                using var model = new Resizable(width, depth, withExtra);
                return string.Join(",", global::System.Linq.Enumerable.Select(
                    global::System.Linq.Enumerable.Where(model.NamedModules(), m => m.Module is global::PeftGen.Nn.LinearBase), m => m.Path));
            }
        }
        """;

    private const string FixedShapes = """
        using PeftGen;
        using PeftGen.Nn;

        namespace Demo;

        [LoRA(rank: 8, alpha: 16, targets: "gate")]
        internal partial class Fixed : Module
        {
            public Fixed() => Gate = RegisterModule("gate", new Linear(12, 6));

            [ModuleName("gate")]
            public LinearBase Gate { get; private set; }

            protected override void OnModuleReplaced(string name, Module replacement) => Gate = (LinearBase)replacement;
        }
        """;

    [Fact]
    public async Task SaveAndLoadMatchTheRuntimeInBothDirections()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-generated-" + Guid.NewGuid().ToString("N"));
        try
        {
            var testCase = GeneratorCases.LlamaAllOptions;
            var facts = (Dictionary<string, object>)(await InvokeAsync(testCase with { Sources = [testCase.Sources[0] + LlamaProbe] }, "RoundTrip", folder))!;

            double effect = (double)facts["adapterEffect"], viaGenerated = (double)facts["generatedLoad"], viaRuntime = (double)facts["runtimeLoad"];
            Assert.True(effect > 1e-3, $"the adapter changes the logits by at most {effect:G4}, too little for the comparison to mean anything");
            Assert.True(viaGenerated == 0, $"generated LoadAdapter of a PeftAdapterFile.Save folder: largest logit difference {viaGenerated:G4} (adapter effect {effect:G4})");
            Assert.True(viaRuntime == 0, $"PeftAdapterFile.LoadInto of a generated SaveAdapter folder: largest logit difference {viaRuntime:G4} (adapter effect {effect:G4})");
            Assert.True((bool)facts["sameWeights"], "generated SaveAdapter and PeftAdapterFile.Save wrote different adapter_model.safetensors");
            Assert.True((bool)facts["sameConfig"], "generated SaveAdapter and PeftAdapterFile.Save wrote different adapter_config.json");

            // The compile-time key list (module order) is what the file holds (sorted by name, as safetensors stores them);
            // the parameters are the trainable ones, counted as planned.
            Assert.Equal(string.Join("\n", StoryTellerFileKeys()), (string)facts["staticKeys"]);
            Assert.Equal(StoryTellerFileKeys().Order(StringComparer.Ordinal), ((string)facts["fileKeys"]).Split('\n'));
            Assert.Equal((string)facts["trainable"], (string)facts["named"]);
            Assert.Equal(35056L, (long)facts["count"]);

            string mismatch = (string)facts["mismatch"];
            Assert.Contains("does not fit the model", mismatch);
            // The message lists the first ten problems and counts the rest, so the first layer's keys are the ones named.
            Assert.Contains("lora_A.weight' [16, 64] matches no layer the config adapts", mismatch);
            Assert.True((bool)facts["untouched"], "a folder that does not fit changed the model");
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task FromPretrainedQuantizesWhileLoadingAndMatchesTheFloatModelWithApplyAdapters()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-generated-load-" + Guid.NewGuid().ToString("N"));
        try
        {
            var testCase = GeneratorCases.LlamaAllOptions;
            var facts = (Dictionary<string, object>)(await InvokeAsync(testCase with { Sources = [testCase.Sources[0] + LoadProbe] }, "Load", folder))!;

            // Right after loading, before ApplyAdapters: exactly the planned layers are 4-bit (layers 0 and 2, k_proj excluded).
            string planned = (string)facts["planned"];
            Assert.Equal(12, planned.Split('\n').Length);
            Assert.Equal(planned, (string)facts["fourBitAfterLoad"]);
            Assert.Contains("model.layers.1.self_attn.q_proj", (string)facts["floatAfterLoad"]);
            Assert.Contains("model.layers.0.self_attn.k_proj", (string)facts["floatAfterLoad"]);
            Assert.Contains("lm_head", (string)facts["floatAfterLoad"]);
            Assert.Equal("", (string)facts["referenceFourBitAfterLoad"]);

            // ApplyAdapters wraps them as they are; the result is the float model's with ApplyAdapters, bit for bit.
            Assert.Equal((string)facts["compileTimePlan"], (string)facts["plan"]);
            double effect = (double)facts["adapterEffect"];
            Assert.True(effect > 1e-3, $"the adapter changes the logits by at most {effect:G4}, too little for the comparison to mean anything");
            Assert.True((bool)facts["logitsEqual"], "FromPretrained + ApplyAdapters and the float model + ApplyAdapters give different logits");

            // A bfloat16 checkpoint keeps its frozen weights 16-bit, and the compile-time estimate counts what the model holds.
            Assert.Equal("BFloat16", (string)facts["embeddingType"]);
            Assert.Equal((long[])facts["weightBytes"], (long[])facts["estimatedWeightBytes"]);
            Assert.True((bool)facts["sameEstimate"], $"generated: {facts["estimate"]}\nruntime:   {facts["runtimeEstimate"]}");
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task DeltaLoRAFromPretrainedKeepsTheBaseInFloat32ForItsUpdates()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-generated-delta-" + Guid.NewGuid().ToString("N"));
        try
        {
            var testCase = GeneratorCases.DeltaLoRA;
            Assert.Equal("Float32", (string)(await InvokeAsync(testCase with { Sources = [testCase.Sources[0] + DeltaLoadProbe] }, "Load", folder))!);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task RunTimeRankCheckThrowsTheTextOfTheCompileTimeDiagnostic()
    {
        var testCase = GeneratorCases.UserModuleRunTimeShapes with { Sources = [GeneratorCases.UserModuleRunTimeShapes.Sources[0] + ResizableProbe] };
        string runTime = (string)(await InvokeAsync(testCase, "Apply", 12, 2, true))!;
        string expected = string.Format(CultureInfo.InvariantCulture, ShapeMessages.RankTooLarge, 8, 6, "gate", 6, 12);
        Assert.Equal("error: " + expected, runTime);

        // The same layer with constant sizes: the compiler reports PEFT003 on the rank with the same text, and the
        // generator emits no run-time check.
        var analyzerTest = new CSharpAnalyzerTest<LoRAAttributeAnalyzer, DefaultVerifier> { TestCode = FixedShapes.Replace("rank: 8,", "rank: {|#0:8|},") };
        ConsumerReferences.AddTo(analyzerTest);
        analyzerTest.ExpectedDiagnostics.Add(CSharpAnalyzerVerifier<LoRAAttributeAnalyzer, DefaultVerifier>.Diagnostic("PEFT003").WithLocation(0).WithMessage(expected));
        await analyzerTest.RunAsync();
        Assert.DoesNotContain("ThrowIfRankExceedsLayer", (await PeftGeneratorTest.RunAsync(new GeneratorCase(FixedShapes), noWarnings: false)).GeneratedText);
    }

    [Theory]
    [InlineData(32, 3, true)]
    [InlineData(32, 2, false)]
    public async Task TypedLayerWalkMatchesTheModuleTree(int width, int depth, bool withExtra)
    {
        var testCase = GeneratorCases.UserModuleRunTimeShapes with { Sources = [GeneratorCases.UserModuleRunTimeShapes.Sources[0] + ResizableProbe] };
        var (applied, runtime) = await InvokeTwiceAsync(testCase, ("Apply", [width, depth, withExtra]), ("RuntimeLinears", [width, depth, withExtra]));
        // Every layer the runtime holds, in its order; "*" marks the adapted ones (targets "proj,gate": all of them).
        Assert.Equal(string.Join(",", ((string)runtime!).Split(',').Select(p => p + "*")), (string)applied!);
    }

    private static IEnumerable<string> StoryTellerFileKeys()
    {
        foreach (int layer in new[] { 0, 2 })
        {
            foreach (var path in new[] { "self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" })
            {
                string prefix = $"base_model.model.model.layers.{layer}.{path}";
                yield return prefix + ".lora_A.weight";
                yield return prefix + ".lora_B.weight";
                yield return prefix + ".lora_magnitude_vector";
            }
        }
    }

    private static async Task<object?> InvokeAsync(GeneratorCase testCase, string method, params object[] arguments) =>
        (await InvokeTwiceAsync(testCase, (method, arguments), null)).First;

    // Consumers compiled once per source: compiling dominates these tests' time.
    private static readonly ConcurrentDictionary<string, Lazy<Task<byte[]>>> Compiled = new();

    /// <summary>Compiles <paramref name="testCase"/> with the generator, loads it, and calls static methods of Demo.Probe.</summary>
    private static async Task<(object? First, object? Second)> InvokeTwiceAsync(GeneratorCase testCase, (string Name, object[] Arguments) first, (string Name, object[] Arguments)? second)
    {
        var image = await Compiled.GetOrAdd(string.Join("\n", testCase.Sources), _ => new Lazy<Task<byte[]>>(() => PeftGeneratorTest.EmitAsync(testCase))).Value;
        var context = new AssemblyLoadContext("consumer", isCollectible: true);
        try
        {
            using var stream = new MemoryStream(image);
            var probe = context.LoadFromStream(stream).GetType("Demo.Probe", throwOnError: true)!;
            object? Call((string Name, object[] Arguments) call)
            {
                try
                {
                    return probe.GetMethod(call.Name)!.Invoke(null, call.Arguments);
                }
                catch (TargetInvocationException e) when (e.InnerException != null)
                {
                    throw e.InnerException;
                }
            }
            return (Call(first), second is { } s ? Call(s) : null);
        }
        finally
        {
            context.Unload();
        }
    }
}
