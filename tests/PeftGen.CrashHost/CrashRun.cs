using PeftGen.Data;
using PeftGen.Methods.LoRA;
using PeftGen.Methods;
using PeftGen.Models.Llama;
using PeftGen.Quantization;
using PeftGen.Training;

namespace PeftGen.CrashHost;

/// <summary>The training run the crash test repeats: tiny Llama, QLoRA with dropout, checkpoints every 3 steps.</summary>
public sealed class CrashRun : IDisposable
{
    private readonly PeftModel<LlamaForCausalLM> _peft;

    private CrashRun(PeftModel<LlamaForCausalLM> peft, Trainer trainer)
    {
        _peft = peft;
        Trainer = trainer;
    }

    /// <summary>The trainer.</summary>
    public Trainer Trainer { get; }

    /// <summary>Builds the run; the same arguments always give the same run.</summary>
    public static CrashRun Create(string outputDir, int maxSteps)
    {
        var config = new LlamaConfig
        {
            HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            VocabSize = 10, MaxPositionEmbeddings = 16, TieWordEmbeddings = true,
        };
        var peft = PeftModel.Create(new LlamaForCausalLM(config, seed: 3),
            new LoRAConfig { Rank = 4, Alpha = 8, Dropout = 0.1f, Targets = TargetModules.AllLinear, Seed = 5 },
            new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 32));
        var trainer = new Trainer(peft, BatchSource.FromFunction(Digits), new TrainerOptions
            {
                MaxSteps = maxSteps, LearningRate = 1e-2f, Schedule = "cosine", WarmupSteps = 2, Optimizer = OptimizerKind.PagedAdamW8bit,
                CheckpointEvery = 3, KeepCheckpoints = 10, OutputDir = outputDir,
            });
        return new CrashRun(peft, trainer);
    }

    private static Batch Digits(long position)
    {
        var random = new Random(unchecked((int)position * 7919 + 1));
        const int batch = 8, length = 12;
        var inputs = new int[batch * length];
        var targets = new int[batch * length];
        for (int b = 0; b < batch; b++)
        {
            int start = random.Next(10), step = random.Next(1, 10);
            for (int t = 0; t < length; t++)
            {
                inputs[b * length + t] = (start + t * step) % 10;
                targets[b * length + t] = t == 0 ? -100 : (start + (t + 1) * step) % 10;
            }
        }
        return new Batch(inputs, targets, batch, length);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Trainer.Dispose();
        _peft.Dispose();
    }
}
