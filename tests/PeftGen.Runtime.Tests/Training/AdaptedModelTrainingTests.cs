using PeftGen.Methods;
using PeftGen.Methods.Bottleneck;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Methods.IA3;
using PeftGen.Methods.LayerDrop;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Methods.Sparse;
using PeftGen.Methods.VeRA;
using PeftGen.Quantization;
using PeftGen.Data;
using PeftGen.Generated;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Tensors;
using PeftGen.Tests.Methods.PromptLearning;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Training;

/// <summary>
/// One training path: every method's adapted model (<see cref="IAdaptedModel"/>) trains, checkpoints, resumes and saves
/// through the same <see cref="Trainer"/> and <see cref="FineTuneSession"/>, with parameter groups asked of the model.
/// </summary>
public class AdaptedModelTrainingTests(Xunit.Abstractions.ITestOutputHelper output)
{
    public static TheoryData<string> Methods => new()
    {
        "lora", "qlora", "dora", "lora-fa", "delta-lora", "vera", "ia3", "bottleneck",
        "prompt-tuning", "prefix-tuning", "p-tuning", "sparse", "lora+layer-drop",
    };

    /// <summary>Batch p of "next token = (3·token + 1) mod 16": a pure function of p.</summary>
    private static Batch TaskBatch(long position)
    {
        var random = new Random(unchecked((int)position * 7919 + 11));
        const int batch = 4, time = 8;
        var inputs = Enumerable.Range(0, batch * time).Select(_ => random.Next(16)).ToArray();
        return new Batch(inputs, inputs.Select(i => (3 * i + 1) % 16).ToArray(), batch, time);
    }

    private static IBatchSource TaskBatches() => BatchSource.FromFunction(TaskBatch);

    private static Tensor Loss(LlamaForCausalLM model, Batch b) => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length);

    /// <summary>A fresh tiny model (always the same weights) with <paramref name="method"/> applied.</summary>
    private static IAdaptedModel Adapt(string method)
    {
        var model = new LlamaForCausalLM(PromptTuningSupport.Tiny, seed: 3);
        var lora = new LoRAConfig { Rank = 4, Alpha = 8, Dropout = 0.1f, Targets = TargetModules.AllLinear, Seed = 5 };
        switch (method)
        {
            case "lora": return PeftModel.Create(model, lora);
            case "qlora": return PeftModel.Create(model, lora, new QuantizationConfig());
            case "dora": return PeftModel.Create(model, lora with { UseDoRA = true });
            case "lora-fa": return PeftModel.Create(model, lora with { UseLoRAFA = true });
            case "delta-lora": return PeftModel.Create(model, lora with { Dropout = 0f, DeltaLoRA = new DeltaLoRAOptions { StartStep = 2 } });
            case "vera": return VeraModel.Create(model, new VeraConfig { Rank = 16, Targets = TargetModules.AllLinear });
            case "ia3": return IA3Model.Create(model, new IA3Config());
            case "bottleneck": return BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 8 });
            case "prompt-tuning": return PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 4 });
            case "prefix-tuning": return PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 4 });
            case "p-tuning": return PromptLearningModel.Create(model, new PTuningConfig { NumVirtualTokens = 4, EncoderHiddenSize = 16 });
            case "sparse":
                return SparseFineTuning.Create(model, new SparseFineTuningConfig { Fraction = 0.05f, CalibrationBatches = 2 },
                    b => Loss(model, b), BatchSource.FromFunction(p => TaskBatch(p + 1000)));
            case "lora+layer-drop":
            {
                var peft = PeftModel.Create(model, lora);
                LayerDropper.Apply(model, new LayerDropConfig { Probability = 0.3f, Seed = 1 });
                return peft;
            }
            default: throw new ArgumentException(method);
        }
    }

    private static string TempDir() => Path.Combine(Path.GetTempPath(), $"peftgen-adapted-{Guid.NewGuid():N}");

    [Theory]
    [MemberData(nameof(Methods))]
    public void Every_method_trains_checkpoints_resumes_and_saves_through_the_one_trainer(string method)
    {
        var dir = TempDir();
        try
        {
            var options = new TrainerOptions
            {
                MaxSteps = 4, LearningRate = 1e-2f, MaxGradNorm = 1f, CheckpointEvery = 2, KeepCheckpoints = 5, OutputDir = Path.Combine(dir, "run"),
            };
            List<float> losses;
            using (var adapted = Adapt(method))
            {
                var trainable = adapted.TrainedModule.NamedParameters().Where(p => p.Tensor.RequiresGrad).ToList();
                var before = trainable.Select(p => p.Tensor.ToArray()).ToList();
                using var trainer = new Trainer(adapted, TaskBatches(), options);
                // The optimizer holds exactly the method's trainable parameters; the model reports its generators.
                Assert.Equal(trainable.Select(p => p.Tensor), trainer.Optimizer.AllParameters(), ReferenceEqualityComparer.Instance);
                int generators = method switch
                {
                    "lora+layer-drop" => 2,
                    "lora" or "qlora" or "dora" or "lora-fa" or "delta-lora" or "vera" => 1,
                    _ => 0,
                };
                Assert.Equal(generators, adapted.RandomGenerators.Count);
                Assert.Equal(method == "sparse" ? 1 : 0, trainer.GradientMasks.Count);
                Assert.Equal(method is "sparse" or "delta-lora" ? 1 : 0, trainer.AfterStepHooks.Count);

                losses = trainer.Train().Losses.ToList();
                Assert.All(losses, l => Assert.True(float.IsFinite(l), $"{method}: loss {l}"));
                double moved = trainable.Select((p, i) => p.Tensor.ToArray().Zip(before[i], (a, b) => Math.Abs(a - b)).Max()).Max();
                Assert.True(moved > 0, $"{method}: no trainable parameter moved");
                output.WriteLine($"{method}: {trainable.Sum(p => p.Tensor.Count)} trainable, loss {losses[0]:F4} → {losses[^1]:F4}");

                string folder = Path.Combine(dir, "adapter");
                adapted.SaveAdapter(folder, baseModelNameOrPath: "tiny");
                var files = Directory.GetFiles(folder).Select(Path.GetFileName).ToHashSet();
                Assert.Contains(method == "sparse" ? SparseFineTuning.DeltaFileName : PeftAdapterFile.ConfigFileName, files);
                if (method == "delta-lora") Assert.Contains(DeltaLoRAFile.BaseDeltaFileName, files);
            }

            // A fresh model resumed from the step-2 checkpoint repeats the uninterrupted run exactly (Delta-LoRA's base
            // changes are not in checkpoints: see docs/methods/delta-lora.md).
            if (method == "delta-lora") return;
            using var fresh = Adapt(method);
            using var resumed = new Trainer(fresh, TaskBatches(), options with { OutputDir = Path.Combine(dir, "resumed") });
            resumed.LoadCheckpoint(Path.Combine(dir, "run", "checkpoint-2"));
            Assert.Equal(losses, resumed.Train().Losses);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_trainer_of_an_adapted_model_equals_the_hand_wired_trainer_of_its_module()
    {
        // LoRA with dropout, LoRA+, layer-wise decay and layer drop: the wiring generated CreateTrainer used to pass by hand.
        var dir = TempDir();
        try
        {
            var options = new TrainerOptions
            {
                MaxSteps = 4, LearningRate = 1e-2f, MaxGradNorm = 1f, LoRAPlusRatio = 16, LayerwiseLearningRateDecay = 0.8f,
                CheckpointEvery = 4,
            };
            using var a = (PeftModel<LlamaForCausalLM>)Adapt("lora+layer-drop");
            using var b = (PeftModel<LlamaForCausalLM>)Adapt("lora+layer-drop");
            using var adapted = new Trainer(a, TaskBatches(), options with { OutputDir = Path.Combine(dir, "a") });
            using var byHand = new Trainer(b.Model, batch => Loss(b.Model, batch), TaskBatches(), options with { OutputDir = Path.Combine(dir, "b") },
                rngs: [b.DropoutRng, b.Model.Model.LayerDrop!.Rng]);
            Assert.Equal(byHand.Optimizer.Groups.Select(g => g.LearningRateScale), adapted.Optimizer.Groups.Select(g => g.LearningRateScale));
            Assert.Equal(byHand.Train().Losses, adapted.Train().Losses);
            foreach (var file in new[] { "trainable.bin", "optimizer.bin", "trainer_state.json" })
                Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "b", "checkpoint-4", file)), File.ReadAllBytes(Path.Combine(dir, "a", "checkpoint-4", file)));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>A module with a LoRA-able layer and a decoy whose parameter path contains ".lora_B." without being LoRA.</summary>
    private sealed class Decoyed : Module
    {
        public Decoyed()
        {
            Proj = RegisterModule("proj", new Linear(8, 8));
            Decoy = RegisterModule("decoy", new Holder());
        }

        public Module Proj { get; private set; }

        public Holder Decoy { get; }

        protected override void OnModuleReplaced(string name, Module replacement)
        {
            if (name == "proj") Proj = replacement;
        }

        public sealed class Holder : Module
        {
            public Holder() => Inner = RegisterModule("lora_B", new Linear(8, 8));

            public Linear Inner { get; }
        }
    }

    [Fact]
    public void LoRA_plus_asks_the_layers_for_B_matrices_rather_than_matching_names()
    {
        using var peft = PeftModel.Create(new Decoyed(), new LoRAConfig { Rank = 2, Alpha = 4, Targets = TargetModules.List("proj") });
        var decoy = peft.Model.Decoy.Inner.Weight;
        decoy.RequiresGrad = true;                                                             // "decoy.lora_B.weight" trains
        var groups = LearningRateGroups.Of(peft.Model, loraPlusRatio: 16);
        Assert.Equal(2, groups.Count);
        var loraB = ((LoRALinear)peft.Model.Proj).LoraB("default");
        Assert.Same(loraB, Assert.Single(groups[1].Parameters));
        Assert.Equal(16f, groups[1].LearningRateScale);
        Assert.Contains(decoy, groups[0].Parameters);                                          // a name is not a layer

        // Without LoRA layers there is nothing to speed up, whatever the names say.
        using var plain = new Decoyed();
        var e = Assert.Throws<ArgumentException>(() => LearningRateGroups.Of(plain, loraPlusRatio: 16));
        Assert.Contains("no trainable lora_B matrices", e.Message);
    }

    /// <summary>What the generator emits for a class with <c>[LoRAPlus(4)]</c> and <c>[LayerwiseLearningRate(0.5)]</c>.</summary>
    private sealed class Declaring(LlamaConfig config) : LlamaForCausalLM(config, seed: 3), IDeclaredTraining
    {
        TrainerOptions IDeclaredTraining.ApplyTo(TrainerOptions options) => options with { LoRAPlusRatio = 4f, LayerwiseLearningRateDecay = 0.5f };
    }

    [Fact]
    public void What_the_class_declares_applies_to_every_trainer_of_its_adapted_models()
    {
        using var peft = PeftModel.Create(new Declaring(PromptTuningSupport.Tiny), new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear });
        using var adapted = new Trainer(peft, TaskBatches(), new TrainerOptions { LoRAPlusRatio = 16 });
        Assert.Equal(4f, adapted.Options.LoRAPlusRatio);                                       // the attribute wins, as in CreateTrainer
        Assert.Equal(0.5f, adapted.Options.LayerwiseLearningRateDecay);
        Assert.Equal(new[] { 4f, 2f, 1f, 0.5f }, adapted.Optimizer.Groups.Select(g => g.LearningRateScale).OrderDescending());

        // A trainer of the bare module takes its options as given.
        using var module = new Trainer(peft.Model, b => Loss(peft.Model, b), TaskBatches(), new TrainerOptions());
        Assert.Equal(1f, module.Options.LayerwiseLearningRateDecay);
        Assert.Single(module.Optimizer.Groups);
    }

    private sealed class DisposalProbe : IAfterStepHook, IDisposable
    {
        public bool Disposed { get; private set; }

        public void AfterStep(int step)
        {
        }

        public void Dispose() => Disposed = true;
    }

    [Fact]
    public void The_model_keeps_its_hooks_and_the_trainer_disposes_those_it_was_given()
    {
        var dir = TempDir();
        try
        {
            using var peft = (PeftModel<LlamaForCausalLM>)Adapt("delta-lora");
            var probe = new DisposalProbe();
            DeltaLoRAUpdater updater;
            using (var trainer = new Trainer(peft, TaskBatches(), new TrainerOptions { MaxSteps = 4, LearningRate = 1e-2f }))
            {
                trainer.AfterStepHooks.Add(probe);
                updater = Assert.IsType<DeltaLoRAUpdater>(trainer.AfterStepHooks[0]);
                trainer.Train();
            }
            Assert.True(probe.Disposed);
            Assert.Equal(2, updater.UpdatesApplied);
            // The updater outlives the trainer: the model saves the base change with it.
            Assert.NotEmpty(updater.BaseDelta());
            peft.SaveAdapter(dir);
            using var fresh = new LlamaForCausalLM(PromptTuningSupport.Tiny, seed: 3);
            using var loaded = DeltaLoRAFile.LoadInto(fresh, dir);
            float diff = PromptTuningSupport.MaxDiff(PromptTuningSupport.Logits(peft.Model, PromptTuningSupport.Ids, 1, 8),
                PromptTuningSupport.Logits(fresh, PromptTuningSupport.Ids, 1, 8));
            Assert.True(diff < 1e-4f, $"reloaded Delta-LoRA logits differ by {diff}");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_module_that_is_not_a_causal_LM_needs_a_loss_and_no_session_takes_it()
    {
        using var peft = PeftModel.Create(new Decoyed(), new LoRAConfig { Rank = 2, Alpha = 4, Targets = TargetModules.List("proj") });
        var e = Assert.Throws<ArgumentException>(() => new Trainer(peft, TaskBatches(), new TrainerOptions()));
        Assert.Contains("not a causal language model: pass the loss function", e.Message);
        Assert.Null(peft.CausalLM);
        using var trainer = new Trainer(peft, TaskBatches(), new TrainerOptions(), loss: _ => Tensor.Zeros(1));
        Assert.Equal(2, trainer.Optimizer.AllParameters().Count());
    }
}
