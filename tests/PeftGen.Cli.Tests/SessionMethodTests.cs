using System.Text.Json;
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
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>
/// The fine-tuning session <c>peftgen train</c> runs takes any PEFT method: <see cref="FineTuneSession.Open{TAdapted}"/>
/// loads the model, applies the method given as one lambda and trains it through the one trainer; the result is the
/// method's adapter folder, the metrics log and the loss curve, and generation runs through the adapted model.
/// </summary>
public class SessionMethodTests
{
    /// <summary>Method, the adapter folder's peft_type (null: sparse fine-tuning's delta file, which has no config).</summary>
    public static TheoryData<string, string?> Methods => new()
    {
        { "lora", "LORA" },
        { "delta-lora", "LORA" },
        { "vera", "VERA" },
        { "ia3", "IA3" },
        { "bottleneck", BottleneckAdapterFile.PeftType },
        { "prompt-tuning", "PROMPT_TUNING" },
        { "prefix-tuning", "PREFIX_TUNING" },
        { "p-tuning", "P_TUNING" },
        { "sparse", null },
    };

    private static IAdaptedModel Adapt(string method, LlamaForCausalLM model) => method switch
    {
        "lora" => PeftModel.Create(model, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear }),
        "delta-lora" => PeftModel.Create(model, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear, DeltaLoRA = new DeltaLoRAOptions { StartStep = 1 } }),
        "vera" => VeraModel.Create(model, new VeraConfig { Rank = 16, Targets = TargetModules.AllLinear }),
        "ia3" => IA3Model.Create(model, new IA3Config()),
        "bottleneck" => BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 8 }),
        "prompt-tuning" => PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 4 }),
        "prefix-tuning" => PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 4 }),
        "p-tuning" => PromptLearningModel.Create(model, new PTuningConfig { NumVirtualTokens = 4, EncoderHiddenSize = 16 }),
        "sparse" => SparseFineTuning.Create(model, SparseFineTuningConfig.BiasesAndNorms),
        _ => throw new ArgumentException(method),
    };

    [Theory]
    [MemberData(nameof(Methods))]
    public void Open_trains_any_method_and_writes_its_adapter_metrics_and_loss_curve(string method, string? peftType)
    {
        using var root = CliRunner.TempFolder("session-" + method);
        var options = new FineTuneOptions
        {
            ModelPath = CliRunner.TinyModelFolder(Path.Combine(root, "model")),
            DataPath = CliRunner.TextDataset(Path.Combine(root, "data.jsonl")),
            OutputDir = Path.Combine(root, "out"),
            BatchSize = 2,
            Dataset = new JsonlDatasetOptions { MaxSequenceLength = 32 },
            Trainer = new TrainerOptions { MaxSteps = 3, LearningRate = 1e-2f },
        };
        // Sparse fine-tuning trains base weights, so they load as float32 (the default keeps the checkpoint's type).
        using var session = FineTuneSession.Open(options, model => Adapt(method, model), method == "sparse" ? new ModelLoadOptions() : null);
        var prompt = session.SamplePrompts(1)[0];
        Assert.NotNull(session.Generate(prompt.PromptIds, SamplingOptions.Greedy(4)));

        var result = session.Train();
        Assert.Equal(3, result.Training.Losses.Count);
        Assert.All(result.Training.Losses, l => Assert.True(float.IsFinite(l), $"{method}: loss {l}"));
        Assert.Equal(3, File.ReadAllLines(result.MetricsPath).Length);
        Assert.True(File.Exists(result.LossCurvePath));
        if (peftType == null)
            Assert.True(File.Exists(Path.Combine(result.AdapterDir, SparseFineTuning.DeltaFileName)));
        else
        {
            using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(result.AdapterDir, PeftAdapterFile.ConfigFileName)));
            Assert.Equal(peftType, config.RootElement.GetProperty("peft_type").GetString());
            Assert.Equal(options.ModelPath, config.RootElement.GetProperty("base_model_name_or_path").GetString());
        }
        if (method == "delta-lora") Assert.True(File.Exists(Path.Combine(result.AdapterDir, DeltaLoRAFile.BaseDeltaFileName)));
        Assert.NotNull(session.Generate(prompt.PromptIds, SamplingOptions.Greedy(4)));
    }

    [Fact]
    public void The_context_must_hold_the_virtual_tokens_too()
    {
        using var root = CliRunner.TempFolder("session-virtual-tokens");
        var options = new FineTuneOptions
        {
            ModelPath = CliRunner.TinyModelFolder(Path.Combine(root, "model")),
            DataPath = CliRunner.TextDataset(Path.Combine(root, "data.jsonl")),
            OutputDir = Path.Combine(root, "out"),
            Dataset = new JsonlDatasetOptions { MaxSequenceLength = CliRunner.TinyConfig.MaxPositionEmbeddings - 2 },
        };
        var e = Assert.Throws<ArgumentException>(() =>
            FineTuneSession.Open(options, model => PromptLearningModel.Create(model, new PromptTuningConfig { NumVirtualTokens = 4 })));
        Assert.Contains("plus the 4 virtual tokens exceeds the model's context of 64 tokens", e.Message);
    }
}
