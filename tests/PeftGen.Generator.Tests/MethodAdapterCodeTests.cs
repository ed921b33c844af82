using System.Globalization;
using System.Reflection;
using System.Runtime.Loader;
using PeftGen.Generator.Tests.TestSupport;
using Xunit.Abstractions;

namespace PeftGen.Generator.Tests;

/// <summary>
/// Runs the generated <c>ApplyAdapters()</c> of every method on the tiny Llama: the trainable parameters the returned
/// object holds equal the compile-time <c>TrainableParameterCount</c> and the runtime's own plan or count, and the
/// generated <c>CreateTrainer</c> wires what the attributes declare, and the generated <c>SaveAdapter</c> →
/// <c>LoadAdapter</c> on a fresh model gives back the adapted model's logits. One compilation holds every method's class.
/// </summary>
public class MethodAdapterCodeTests(ITestOutputHelper output)
{
    private const string Probe = """
        using System.Linq;
        using PeftGen.Data;
        using PeftGen.Methods.LayerDrop;
        using PeftGen.Methods.VeRA;
        using PeftGen.Models.Llama;
        using PeftGen.Optim;
        using PeftGen.Training;

        namespace Demo;

        internal static class Probe
        {
            private static LlamaConfig Config() => new()
            {
                HiddenSize = 64, IntermediateSize = 172, NumHiddenLayers = 3, NumAttentionHeads = 8, NumKeyValueHeads = 4,
                VocabSize = 512, RmsNormEps = 1e-5f,
            };

            private static long Trainable(PeftGen.Nn.Module model) => model.NamedParameters().Where(p => p.Tensor.RequiresGrad).Sum(p => p.Tensor.Count);

            private static readonly IBatchSource Batches = BatchSource.FromFunction(_ => new Batch(new[] { 1, 2 }, new[] { 2, 3 }, 1, 2));

            // "compile-time runtime-plan trainable" per method.
            public static string[] Counts()
            {
                var lines = new System.Collections.Generic.List<string>();
                using (var model = new FrugalChat(Config()))
                using (var peft = model.ApplyAdapters())
                    lines.Add($"LoRA-FA {FrugalChat.TrainableParameterCount} {peft.Plan().Sum(l => l.TrainableParameters)} {Trainable(model)}");
                using (var model = new VeraChat(Config()))
                using (var peft = model.ApplyAdapters())
                    lines.Add($"VeRA {VeraChat.TrainableParameterCount} {peft.Plan().Sum(l => l.TrainableParameters)} {Trainable(model)}");
                using (var model = new ScaledChat(Config()))
                using (var ia3 = model.ApplyAdapters())
                    lines.Add($"IA3 {ScaledChat.TrainableParameterCount} {ia3.Plan().Sum(l => l.TrainableParameters)} {Trainable(model)}");
                using (var model = new NarrowChat(Config()))
                using (var bottleneck = model.ApplyAdapters())
                    lines.Add($"Bottleneck {NarrowChat.TrainableParameterCount} {bottleneck.Plan().Sum(s => s.TrainableParameters)} {Trainable(model)}");
                using (var model = new RandomPrompt(Config()))
                using (var prompt = model.ApplyAdapters())
                    lines.Add($"PromptTuning {RandomPrompt.TrainableParameterCount} {prompt.ParameterCount("default")} {prompt.TrainableParameters().Sum(t => t.Count)}");
                using (var model = new PrefixedChat(Config()))
                using (var prompt = model.ApplyAdapters())
                    lines.Add($"PrefixTuning {PrefixedChat.TrainableParameterCount} {prompt.ParameterCount("default")} {prompt.TrainableParameters().Sum(t => t.Count)}");
                using (var model = new EncodedChat(Config()))
                using (var prompt = model.ApplyAdapters())
                    lines.Add($"PTuning {EncodedChat.TrainableParameterCount} {prompt.ParameterCount("default")} {prompt.TrainableParameters().Sum(t => t.Count)}");
                return lines.ToArray();
            }

            public static string Trainers()
            {
                var options = new TrainerOptions { MaxSteps = 1 };
                using var frugal = new FrugalChat(Config());
                using var peft = frugal.ApplyAdapters();
                using var trainer = frugal.CreateTrainer(peft, _ => throw new System.InvalidOperationException(), Batches, options);
                var drop = frugal.Model.LayerSkip as LayerDropper; // the harness compiles with C# 13, which cannot see the LayerDrop extension property
                string first = $"lora+ {trainer.Options.LoRAPlusRatio} decay {trainer.Options.LayerwiseLearningRateDecay} drop {drop?.Probabilities[2]}";

                using var moving = new MovingChat(Config());
                using var deltaPeft = moving.ApplyAdapters();
                using var deltaTrainer = moving.CreateTrainer(deltaPeft, _ => throw new System.InvalidOperationException(), Batches, options);
                string second = $"hooks {deltaTrainer.AfterStepHooks.Count} {deltaTrainer.AfterStepHooks[0].GetType().Name}";

                using var sparse = new SparseChat(Config());
                var selection = sparse.ApplyAdapters();
                using var sparseTrainer = sparse.CreateTrainer(selection, _ => throw new System.InvalidOperationException(), Batches, options);
                string third = $"masks {sparseTrainer.GradientMasks.Count} entries {selection.TrainableEntries}";

                // Prompt learning trains the PromptLearningModel (the base is frozen); [LayerDrop] is installed on the base.
                using var encoded = new EncodedChat(Config());
                using var prompt = encoded.ApplyAdapters();
                using var promptTrainer = encoded.CreateTrainer(prompt, _ => throw new System.InvalidOperationException(), Batches, options);
                string fourth = $"prompt {promptTrainer.Optimizer.AllParameters().Sum(t => t.Count)} of {EncodedChat.TrainableParameterCount} drop {(encoded.Model.LayerSkip as LayerDropper)?.Probabilities[0]}";
                return first + "; " + second + "; " + third + "; " + fourth;
            }

            private static float[] Logits(LlamaForCausalLM model)
            {
                model.Eval();
                using var noGrad = PeftGen.Autograd.GradMode.Disable();
                using var scope = PeftGen.Tensors.TensorScope.Begin();
                int[] ids = { 1, 5, 9, 200, 33, 7, 411, 2 };
                return model.Forward(ids, 1, ids.Length).ToArray();
            }

            private static double MaxDiff(float[] a, float[] b)
            {
                if (a.Length != b.Length) return double.PositiveInfinity;
                double max = 0;
                for (int i = 0; i < a.Length; i++) max = System.Math.Max(max, System.Math.Abs((double)a[i] - b[i]));
                return max;
            }

            // Moves every trainable tensor off its initial value (B = 0, up = 0, ones…), so the adapter changes the logits.
            private static void Perturb(PeftGen.Nn.Module module, int seed)
            {
                var random = new System.Random(seed);
                foreach (var (_, tensor) in module.NamedParameters().Where(p => p.Tensor.RequiresGrad))
                {
                    var values = tensor.AsSpan();
                    for (int i = 0; i < values.Length; i++) values[i] += (float)(random.NextDouble() - 0.5) * 0.2f;
                }
            }

            // "method loaded-vs-adapted adapter-effect" per round trip, in max |Δlogit|.
            private static string Line(string method, float[] adapted, float[] baseline, float[] loaded) =>
                System.FormattableString.Invariant($"{method} {MaxDiff(adapted, loaded):G6} {MaxDiff(adapted, baseline):G6}");

            public static string[] RoundTrips(string folder)
            {
                var lines = new System.Collections.Generic.List<string>();
                string Dir(string name) => System.IO.Path.Combine(folder, name);

                {
                    var source = new VeraChat(Config());
                    var baseline = Logits(source);
                    using var peft = source.ApplyAdapters();
                    Perturb(source, 1);
                    var adapted = Logits(source);
                    VeraChat.SaveAdapter(peft, Dir("vera"));
                    var fresh = new VeraChat(Config());
                    using (fresh.LoadAdapter(Dir("vera"))) lines.Add(Line("VeRA", adapted, baseline, Logits(fresh)));
                    var viaRuntime = new VeraChat(Config());
                    using (VeraAdapterFile.LoadInto(viaRuntime, Dir("vera"), VeraChat.QuantizationConfig))
                        lines.Add(Line("VeRA-runtime-load", adapted, baseline, Logits(viaRuntime)));
                }
                {
                    var source = new ScaledChat(Config());
                    var baseline = Logits(source);
                    using var ia3 = source.ApplyAdapters();
                    Perturb(source, 2);
                    var adapted = Logits(source);
                    ScaledChat.SaveAdapter(ia3, Dir("ia3"));
                    var fresh = new ScaledChat(Config());
                    using (fresh.LoadAdapter(Dir("ia3"))) lines.Add(Line("IA3", adapted, baseline, Logits(fresh)));
                    var viaRuntime = new ScaledChat(Config());
                    using (PeftGen.Methods.IA3.IA3AdapterFile.LoadInto(viaRuntime, Dir("ia3")))
                        lines.Add(Line("IA3-runtime-load", adapted, baseline, Logits(viaRuntime)));
                }
                {
                    var source = new NarrowChat(Config());
                    var baseline = Logits(source);
                    using var bottleneck = source.ApplyAdapters();
                    Perturb(source, 3);
                    var adapted = Logits(source);
                    NarrowChat.SaveAdapter(bottleneck, Dir("bottleneck"));
                    var fresh = new NarrowChat(Config());
                    using (fresh.LoadAdapter(Dir("bottleneck"))) lines.Add(Line("Bottleneck", adapted, baseline, Logits(fresh)));
                }
                {
                    var source = new RandomPrompt(Config());
                    var baseline = Logits(source);
                    using var prompt = source.ApplyAdapters();
                    Perturb(prompt, 4);
                    var adapted = Logits(source);
                    RandomPrompt.SaveAdapter(prompt, Dir("prompt"));
                    var fresh = new RandomPrompt(Config());
                    using (fresh.LoadAdapter(Dir("prompt"))) lines.Add(Line("PromptTuning", adapted, baseline, Logits(fresh)));
                }
                {
                    var source = new PrefixedChat(Config());
                    var baseline = Logits(source);
                    using var prompt = source.ApplyAdapters();
                    Perturb(prompt, 5);
                    var adapted = Logits(source);
                    PrefixedChat.SaveAdapter(prompt, Dir("prefix"));
                    var fresh = new PrefixedChat(Config());
                    using (fresh.LoadAdapter(Dir("prefix"))) lines.Add(Line("PrefixTuning", adapted, baseline, Logits(fresh)));
                }
                {
                    var source = new EncodedChat(Config());
                    var baseline = Logits(source);
                    using var prompt = source.ApplyAdapters();
                    Perturb(prompt, 6);
                    var adapted = Logits(source);
                    EncodedChat.SaveAdapter(prompt, Dir("ptuning"));
                    var fresh = new EncodedChat(Config());
                    using (fresh.LoadAdapter(Dir("ptuning"))) lines.Add(Line("PTuning", adapted, baseline, Logits(fresh)));
                }
                {
                    // Delta-LoRA: one base update past StartStep (100), then the LoRA folder plus the base change.
                    var source = new MovingChat(Config());
                    var baseline = Logits(source);
                    using var peft = source.ApplyAdapters();
                    using var trainer = source.CreateTrainer(peft, _ => throw new System.InvalidOperationException(), Batches, new TrainerOptions { MaxSteps = 1 });
                    Perturb(source, 7);
                    trainer.AfterStepHooks[0].AfterStep(101);
                    var adapted = Logits(source);
                    MovingChat.SaveAdapter(peft, trainer, Dir("delta"));
                    var fresh = new MovingChat(Config());
                    using (fresh.LoadAdapter(Dir("delta"))) lines.Add(Line("DeltaLoRA", adapted, baseline, Logits(fresh)));
                }
                {
                    var source = new SparseChat(Config());
                    var baseline = Logits(source);
                    var selection = source.ApplyAdapters();
                    Perturb(source, 8);
                    var adapted = Logits(source);
                    SparseChat.SaveAdapter(selection, Dir("sparse"));
                    using var fresh = new SparseChat(Config());
                    fresh.LoadAdapter(Dir("sparse"));
                    lines.Add(Line("Sparse", adapted, baseline, Logits(fresh)));
                }
                return lines.ToArray();
            }
        }
        """;

    private static GeneratorCase Combined()
    {
        var cases = new[]
        {
            GeneratorCases.LoRAFAWithTraining, GeneratorCases.DeltaLoRA, GeneratorCases.VeRAAllOptions, GeneratorCases.IA3AllOptions,
            GeneratorCases.BottleneckAllOptions, GeneratorCases.PrefixTuningProjection, GeneratorCases.PTuningEncoder,
            GeneratorCases.Llama("RandomPrompt", "[PromptTuning(8)]"),
            GeneratorCases.Llama("SparseChat", "[SparseFineTuning(1.0, \"gate_proj\", Score = PeftGen.Methods.Sparse.SparseScore.None)]"),
        };
        return new GeneratorCase(cases.SelectMany(c => c.Sources).Append(Probe).ToArray(), [cases[0].AdditionalFiles[0]]);
    }

    private static readonly Lazy<Task<byte[]>> Image = new(() => PeftGeneratorTest.EmitAsync(Combined()));

    [Fact]
    public async Task EveryMethodTrainsTheCompileTimeParameterCount()
    {
        var lines = (string[])(await CallAsync("Counts"))!;
        Assert.Equal(7, lines.Length);
        foreach (var line in lines)
        {
            var parts = line.Split(' ');
            Assert.True(parts[1] == parts[2] && parts[2] == parts[3], $"{parts[0]}: compile-time {parts[1]}, runtime plan {parts[2]}, trainable {parts[3]}");
        }
        // The formulas, by hand, for the tiny config (hidden 64, intermediate 172, 3 layers, kv_dim 32).
        Assert.Contains("LoRA-FA 7200 ", lines[0]);       // r·out over 7 layers × 3: 4·(64+32+32+64+172+172+64)·3
        Assert.Contains("VeRA 512 ", lines[1]);           // q, v, o in layers 0 and 1 (k excluded): (64+32) + (32+32) + (64+32) per layer
        Assert.Contains("Bottleneck 2048 ", lines[3]);    // 2·64·8 per MLP site, layers 0 and 2, no bias
        Assert.Contains("PromptTuning 512 ", lines[4]);   // 8 · 64
    }

    [Fact]
    public async Task CreateTrainerWiresTheDeclaredTraining()
    {
        string wiring = (string)(await CallAsync("Trainers"))!;
        // Sparse: every gate_proj entry, 64·172 per layer × 3.
        // Prompt: the trainer's parameters are exactly P-tuning's 5568 (the encoder), the base's layer drop 0.1 installed.
        Assert.Equal("lora+ 16 decay 0.9 drop 0.2; hooks 1 DeltaLoRAUpdater; masks 1 entries 33024; prompt 5568 of 5568 drop 0.1", wiring);
    }

    [Fact]
    public async Task GeneratedSaveAndLoadRoundTripEveryMethod()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-method-roundtrip-" + Guid.NewGuid().ToString("N"));
        try
        {
            var lines = (string[])(await CallAsync("RoundTrips", folder))!;
            Assert.Equal(["VeRA", "VeRA-runtime-load", "IA3", "IA3-runtime-load", "Bottleneck", "PromptTuning", "PrefixTuning", "PTuning", "DeltaLoRA", "Sparse"],
                lines.Select(l => l.Split(' ')[0]));
            foreach (var line in lines)
            {
                output.WriteLine("method, max |Δlogit| reloaded vs adapted, adapter effect: " + line);
                var parts = line.Split(' ');
                double loaded = double.Parse(parts[1], CultureInfo.InvariantCulture), effect = double.Parse(parts[2], CultureInfo.InvariantCulture);
                // The reloaded model must reproduce the adapted one, and the adapter must matter, else the comparison proves nothing.
                Assert.True(loaded <= 1e-5, $"{parts[0]}: reloaded logits differ from the adapted model's by up to {loaded} (adapter effect {effect})");
                Assert.True(effect >= 1e-3, $"{parts[0]}: the adapter moves the logits by only {effect}, too little for the round trip to show anything (reload error {loaded})");
            }
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    private static async Task<object?> CallAsync(string method, params object[] arguments)
    {
        var image = await Image.Value;
        var context = new AssemblyLoadContext("methods", isCollectible: true);
        try
        {
            using var stream = new MemoryStream(image);
            var probe = context.LoadFromStream(stream).GetType("Demo.Probe", throwOnError: true)!;
            try
            {
                return probe.GetMethod(method)!.Invoke(null, arguments);
            }
            catch (TargetInvocationException e) when (e.InnerException != null)
            {
                throw e.InnerException;
            }
        }
        finally
        {
            context.Unload();
        }
    }
}
