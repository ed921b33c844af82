using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Tests.IO;
using PeftGen.Training;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Training;

public class MemoryModelTests(ITestOutputHelper output)
{
    private static readonly LlamaConfig Config = new()
    {
        HiddenSize = 192, IntermediateSize = 512, NumHiddenLayers = 3, NumAttentionHeads = 6, NumKeyValueHeads = 2,
        VocabSize = 256, MaxPositionEmbeddings = 256, TieWordEmbeddings = false,
    };

    private static readonly LoRAConfig AllLinear = new() { Rank = 8, Alpha = 16, Dropout = 0.05f, Targets = TargetModules.AllLinear };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Weights_are_predicted_to_the_byte(bool quantized)
    {
        using var dir = new TempFolder();
        using (var source = new LlamaForCausalLM(Config, seed: 1)) HuggingFaceLlama.Save(source, dir.Path, DType.BFloat16);
        var quantization = quantized ? new QuantizationConfig() : null;
        using var model = ModelLoader.Load(dir.Path, PeftModel.LoadOptions(AllLinear, quantization));
        long fourBit = model.NamedModules().Select(m => m.Module).OfType<Linear4Bit>().Sum(l => l.Weight.StorageBytes);
        long other = model.NamedParameters().Sum(p => p.Tensor.Count * p.Tensor.DType.ElementSize());
        var estimate = MemoryModel.ForTraining(Config, AllLinear, quantization, DType.BFloat16, 1, 64, gradientCheckpointing: true);
        output.WriteLine($"4-bit {fourBit} B (predicted {estimate.FourBitWeights}), other {other} B (predicted {estimate.FrozenWeights})");
        Assert.Equal(fourBit, estimate.FourBitWeights);
        Assert.Equal(other, estimate.FrozenWeights);
    }

    [Theory]
    [InlineData(true, 0.05f, 256)]
    [InlineData(false, 0.05f, 256)]
    [InlineData(true, 0f, 256)]
    [InlineData(false, 0f, 256)]
    [InlineData(true, 0f, 16384)]   // a real vocabulary: the head and loss keep no [tokens, vocab] logits
    [InlineData(false, 0f, 16384)]
    public void A_training_steps_tensor_memory_is_predicted_within_8_percent(bool checkpointing, float dropout, int vocab)
    {
        const int Batch = 2, Length = 96;
        var lora = AllLinear with { Dropout = dropout };
        var config = Config with { VocabSize = vocab };
        using var model = new LlamaForCausalLM(config, seed: 3);
        using var peft = PeftModel.Create(model, lora, new QuantizationConfig());
        long before = HostMemoryStats.Live;                                                 // the model with its adapter's parameters
        long adapterParameters = model.TrainableParameters().Sum(p => p.Count * sizeof(float));
        if (checkpointing) model.Model.EnableGradientCheckpointing(peft.DropoutRng);
        var random = new Random(1);
        var ids = Enumerable.Range(0, Batch * Length).Select(_ => random.Next(vocab)).ToArray();
        var batches = BatchSource.FromFunction(_ => new Batch(ids, ids, Batch, Length));
        using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), batches, new TrainerOptions { MaxSteps = 2 });
        HostMemoryStats.ResetPeak();
        trainer.Train();
        long measured = HostMemoryStats.Peak - before;                                      // gradients, optimizer state, activations
        var estimate = MemoryModel.ForTraining(config, lora, new QuantizationConfig(), DType.Float32, Batch, Length, checkpointing);
        long predicted = estimate.Adapter - adapterParameters + estimate.Activations;
        double error = (double)predicted / measured - 1;
        output.WriteLine($"checkpointing {checkpointing}, dropout {dropout}, vocabulary {vocab}: measured {measured:N0} B, predicted {predicted:N0} B (adapter state {estimate.Adapter - adapterParameters:N0} + activations {estimate.Activations:N0}), error {error:P1}");
        Assert.True(Math.Abs(error) < 0.08, $"predicted {predicted:N0} B, measured {measured:N0} B: error {error:P1}");
    }

    [Fact]
    public void Checkpointing_and_4_bit_storage_lower_the_prediction_as_expected()
    {
        var nf4 = MemoryModel.ForTraining(Config, AllLinear, new QuantizationConfig(), DType.BFloat16, 1, 128, gradientCheckpointing: true);
        var lora = MemoryModel.ForTraining(Config, AllLinear, null, DType.BFloat16, 1, 128, gradientCheckpointing: true);
        var full = MemoryModel.ForTraining(Config, AllLinear, new QuantizationConfig(), DType.BFloat16, 1, 128, gradientCheckpointing: false);
        Assert.True(nf4.Weights < lora.Weights * 0.4, $"{nf4.Weights} vs {lora.Weights}");
        Assert.True(nf4.Activations < full.Activations, $"{nf4.Activations} vs {full.Activations}");
        Assert.Equal(nf4.Total, nf4.Weights + nf4.Adapter + nf4.Activations + nf4.Workspace + nf4.Runtime);
        Assert.Contains("predicted peak", nf4.ToString());
    }
}
