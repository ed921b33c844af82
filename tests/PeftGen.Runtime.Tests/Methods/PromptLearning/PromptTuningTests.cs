using System.Text.Json;
using PeftGen.Data;
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using PeftGen.Training;
using Xunit;
using static PeftGen.Tests.Methods.PromptLearning.PromptTuningSupport;

namespace PeftGen.Tests.Methods.PromptLearning;

public class PromptTuningTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>Sets the virtual tokens to the embeddings of real tokens, so the adapted model must act as if they were typed.</summary>
    private static void UseTokensAsVirtual(PromptLearningModel peft, int[] tokens)
    {
        int hidden = peft.Model.Config.HiddenSize;
        var source = peft.Model.Model.EmbedTokens.Weight.AsSpan();
        var table = peft.Encoder(peft.ActiveAdapter).Embedding.Weight.AsSpan();
        for (int i = 0; i < tokens.Length; i++) source.Slice(tokens[i] * hidden, hidden).CopyTo(table.Slice(i * hidden, hidden));
    }

    [Fact]
    public void Virtual_tokens_act_like_tokens_at_positions_0_to_n_minus_1()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 11);
        int[] virtualAsReal = [6, 10, 12];
        var tokens = new[] { 1, 5, 7, 3 };
        var reference = Logits(model, [.. virtualAsReal, .. tokens], 1, 7).AsSpan(3 * 16).ToArray(); // the last 4 positions
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 3 });
        UseTokensAsVirtual(peft, virtualAsReal);
        float diff = MaxDiff(reference, Logits(model, tokens, 1, 4));
        Assert.True(diff < 1e-5f, $"prompt tuning vs the model run on [virtual; tokens]: max diff {diff:E3}");
        using (peft.DisableAdapters())
        {
            using var plain = new LlamaForCausalLM(Tiny, seed: 11);
            Assert.Equal(Logits(plain, tokens, 1, 4), Logits(model, tokens, 1, 4));
        }
    }

    [Fact]
    public void Batches_share_the_virtual_tokens()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 12);
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 2, Seed = 3 });
        var both = Logits(model, Ids, 2, 4);
        var second = Logits(model, Ids[4..], 1, 4);
        float diff = MaxDiff(both.AsSpan(4 * 16).ToArray(), second);
        Assert.True(diff < 1e-5f, $"batch row 1 vs alone: {diff:E3}");
    }

    [Fact]
    public void Gradient_of_the_virtual_tokens_matches_finite_differences()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 13);
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 2, Seed = 1 });
        var table = peft.Encoder("default").Embedding.Weight;
        Fill(table, new Random(2), 0.1f);
        GradCheck.Assert(_ => model.Forward(Ids, 2, 4), [table], eps: 1e-2f, tolerance: 3e-2f);
    }

    [Fact]
    public void Trainable_parameters_are_n_times_hidden()
    {
        using var peft = PromptLearningModel.Create(new LlamaForCausalLM(Tiny, seed: 2), new PromptTuningConfig { NumVirtualTokens = 5 });
        Assert.Equal(5L * Tiny.HiddenSize, peft.TrainableParameters().Sum(t => t.Count));
        Assert.Equal(5L * Tiny.HiddenSize, peft.ParameterCount("default"));
        Assert.Empty(peft.Model.TrainableParameters());
        Assert.Equal(["prompt_encoder.default.embedding.weight"], peft.NamedParameters().Select(p => p.Path).ToArray());
    }

    [Fact]
    public void Text_init_copies_the_embeddings_of_the_text_tokens()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 14);
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 5, Init = PromptTuningInit.Text, InitText = "abc" }, new ToyTokenizer());
        int[] expectedIds = [1, 3, 4, 5, 1]; // BOS a b c, repeated to 5
        var table = peft.Encoder("default").Embedding.Weight.ToArray();
        var embeddings = model.Model.EmbedTokens.Weight.ToArray();
        for (int i = 0; i < 5; i++)
            Assert.Equal(embeddings.AsSpan(expectedIds[i] * 32, 32).ToArray(), table.AsSpan(i * 32, 32).ToArray());
    }

    [Fact]
    public void Invalid_configurations_are_clear_errors()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 2);
        var e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 0 }));
        Assert.Contains("num_virtual_tokens must be ≥ 1", e.Message);
        e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 24 }));
        Assert.Contains("leaves no position for the input", e.Message);
        e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PromptTuningConfig { Init = PromptTuningInit.Text, InitText = "ab" }));
        Assert.Contains("needs the model's tokenizer", e.Message);
        e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PromptTuningConfig { Init = PromptTuningInit.Text }));
        Assert.Contains("prompt_tuning_init_text", e.Message);
        Assert.Null(model.Model.PromptLearning);
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 20 });
        e = Assert.Throws<ArgumentException>(() => model.Forward(Ids, 1, 8));
        Assert.Contains("max_position_embeddings", e.Message);
        e = Assert.Throws<ArgumentException>(() => peft.AddAdapter("other", new PrefixTuningConfig()));
        Assert.Contains("Cannot combine adapters of different methods", e.Message);
    }

    [Fact]
    public void Training_lowers_the_loss()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 7);
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 4 });
        var (first, last) = Train(model, peft.TrainableParameters(), steps: 25, learningRate: 0.1f);
        output.WriteLine(FormattableString.Invariant($"PromptTuning: loss {first:F4} -> {last:F4}"));
        Assert.True(last < 0.9f * first, $"prompt tuning: loss {first:F4} → {last:F4}");
    }

    [Fact]
    public void The_trainer_trains_and_checkpoints_only_the_prompt_encoder()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 7);
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 4 });
        var random = new Random(3);
        var inputs = Enumerable.Range(0, 4 * 6).Select(_ => random.Next(16)).ToArray();
        var targets = inputs.Select(i => (3 * i + 1) % 16).ToArray();
        var embedBefore = model.Model.EmbedTokens.Weight.ToArray();
        using var trainer = new Trainer(peft, BatchSource.FromFunction(_ => new Batch(inputs, targets, 4, 6)),
            new TrainerOptions { MaxSteps = 25, LearningRate = 0.1f, MaxGradNorm = 0 });                    // loss: the base model's, prompt plugged in
        var result = trainer.Train();
        output.WriteLine(FormattableString.Invariant($"PromptTuning via Trainer: loss {result.Losses[0]:F4} -> {result.Losses[^1]:F4}"));
        Assert.True(result.Losses[^1] < 0.9f * result.Losses[0], $"prompt tuning via Trainer: loss {result.Losses[0]:F4} → {result.Losses[^1]:F4}");
        Assert.Equal(["prompt_encoder.default.embedding.weight"], peft.NamedParameters().Select(p => p.Path).ToArray());
        Assert.Equal(embedBefore, model.Model.EmbedTokens.Weight.ToArray());
    }

    [Fact]
    public void The_base_model_follows_the_prompt_models_training_mode()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 7);
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 4 });
        peft.Eval();
        Assert.False(model.IsTraining);
        Assert.False(model.Model.Layers[0].IsTraining);
        peft.Train();
        Assert.True(model.Model.Layers[0].IsTraining);
    }

    [Fact]
    public void Greedy_generation_with_the_kv_cache_equals_the_hand_built_reference()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 15);
        int[] virtualAsReal = [6, 10, 12];
        int[] prompt = [1, 5, 7];
        var reference = GreedyWithoutCache(model, [.. virtualAsReal, .. prompt], 6)[3..];     // the base model, tokens typed
        using var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 3 });
        UseTokensAsVirtual(peft, virtualAsReal);
        var generated = new TextGenerator(model, new ToyTokenizer()).GenerateIds(prompt, SamplingOptions.Greedy(6) with { StopAtEos = false });
        Assert.Equal(reference, generated);
        Assert.Equal(GreedyWithoutCache(model, prompt, 6), generated);
    }

    [Fact]
    public void Saves_and_loads_in_peft_format()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-pt-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = new LlamaForCausalLM(Tiny, seed: 16);
            var peft = PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 3, Seed = 4 });
            var expected = Logits(model, Ids, 2, 4);
            PromptLearningAdapterFile.Save(peft, folder);
            using (var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapterFile.WeightsFileName)))
                Assert.Equal([3, 32], file.GetInfo("prompt_embeddings").Shape);
            using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, PeftAdapterFile.ConfigFileName))))
            {
                var root = json.RootElement;
                Assert.Equal("PROMPT_TUNING", root.GetProperty("peft_type").GetString());
                Assert.Equal(3, root.GetProperty("num_virtual_tokens").GetInt32());
                Assert.Equal(32, root.GetProperty("token_dim").GetInt32());
                Assert.Equal(4, root.GetProperty("num_attention_heads").GetInt32());
                Assert.Equal(2, root.GetProperty("num_layers").GetInt32());
                Assert.Equal(1, root.GetProperty("num_transformer_submodules").GetInt32());
                Assert.Equal("RANDOM", root.GetProperty("prompt_tuning_init").GetString());
            }
            using var fresh = new LlamaForCausalLM(Tiny, seed: 16);
            using var loaded = PromptLearningAdapterFile.LoadInto(fresh, folder);
            Assert.Equal(expected, Logits(fresh, Ids, 2, 4));
            Assert.Empty(loaded.TrainableParameters()); // PEFT's inference mode

            using var wide = new LlamaForCausalLM(Tiny with { HiddenSize = 48, NumAttentionHeads = 6, NumKeyValueHeads = 3 }, seed: 1);
            var e = Assert.Throws<InvalidDataException>(() => PromptLearningAdapterFile.LoadInto(wide, folder));
            Assert.Contains("token_dim is 32 but the model has 48", e.Message);
            Assert.Null(wide.Model.PromptLearning);
            e = Assert.Throws<InvalidDataException>(() => PeftAdapterFile.ReadConfig(Path.Combine(folder, PeftAdapterFile.ConfigFileName)));
            Assert.Contains("PromptLearningAdapterFile", e.Message);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
