using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.IO;

public class ModelLoaderTests(ITestOutputHelper output)
{
    private static readonly QuantizationConfig Nf4 = new(QuantType.NF4, DoubleQuant: true, BlockSize: 64);

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    [InlineData(DType.Float16)]
    public void Four_bit_load_gives_the_codes_and_logits_of_quantizing_the_loaded_model(DType stored)
    {
        using var dir = new TempFolder();
        using (var source = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 11)) HuggingFaceLlama.Save(source, dir.Path, stored);
        using var reference = HuggingFaceLlama.Load(dir.Path);
        QuantizeInPlace(reference, Nf4);

        using var streamed = ModelLoader.Load(dir.Path, new ModelLoadOptions { Quantization = Nf4 });
        int layers = AssertSameCodes(reference, streamed);
        Assert.Equal(IOTestSupport.Tiny.NumHiddenLayers * 7, layers);
        Assert.IsType<Linear>(streamed.LmHead); // "all-linear" leaves the output head in float
        double err = IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(reference), IOTestSupport.Logits(streamed));
        output.WriteLine($"{stored} file: {layers} layers quantized while loading; codes identical; max |logit diff| = {err:E3}");
        Assert.True(err == 0, $"4-bit load differs from quantizing the loaded model: max |logit diff| {err:E3}");
    }

    [StoriesFact]
    public void Four_bit_load_of_the_llama2c_stories260K_equals_quantizing_it_after_loading()
    {
        var path = SharedModels.Stories260KCheckpoint!;
        using var reference = Llama2Checkpoint.Load(path);
        QuantizeInPlace(reference, Nf4);
        using var streamed = ModelLoader.Load(path, new ModelLoadOptions { Quantization = Nf4 });
        int layers = AssertSameCodes(reference, streamed);
        int[] prompt = [1, 403, 407, 261, 378, 270, 301, 425, 16];
        double err = IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(reference, prompt, 1), IOTestSupport.Logits(streamed, prompt, 1));
        output.WriteLine($"stories260K: {layers} layers quantized while loading; max |logit diff| = {err:E3}");
        Assert.True(err == 0, $"max |logit diff| {err:E3}");
    }

    [Fact]
    public void A_four_bit_load_holds_no_full_precision_buffer_beyond_one_tensor()
    {
        using var dir = new TempFolder();
        var config = IOTestSupport.Tiny with { HiddenSize = 128, IntermediateSize = 320, NumHiddenLayers = 3, VocabSize = 64 };
        using (var source = new LlamaForCausalLM(config, seed: 2)) HuggingFaceLlama.Save(source, dir.Path, DType.BFloat16);
        long largestTensor = HuggingFaceLlama.ExpectedShapes(config).Values.Max(s => ShapeUtil.Count(s)) * sizeof(float);
        long fullPrecision = HuggingFaceLlama.ExpectedShapes(config).Values.Sum(s => ShapeUtil.Count(s)) * sizeof(float);

        long before = HostMemoryStats.Live;
        HostMemoryStats.ResetPeak();
        using var model = ModelLoader.Load(dir.Path, new ModelLoadOptions
        {
            Quantization = Nf4, FrozenWeights = FrozenWeightStorage.AsStored,
        });
        long final = HostMemoryStats.Live - before, peak = HostMemoryStats.Peak - before;
        output.WriteLine($"tensor memory: final {final:N0} B, peak during load {peak:N0} B, largest tensor in float32 {largestTensor:N0} B, whole model in float32 {fullPrecision:N0} B");
        Assert.True(peak <= final + largestTensor, $"the load peaked at {peak:N0} B, above the result ({final:N0} B) plus one float32 tensor ({largestTensor:N0} B)");
        Assert.True(final < fullPrecision / 4, $"the loaded model holds {final:N0} B of tensors; in float32 it is {fullPrecision:N0} B");
        Assert.Equal(DType.BFloat16, model.Model.EmbedTokens.Weight.DType);
        Assert.Equal(DType.BFloat16, model.LmHead!.Weight.DType);
        Assert.Equal(DType.Float32, model.Model.Norm.Weight.DType);
        Assert.All(model.NamedModules().Where(m => m.Path.EndsWith("_proj", StringComparison.Ordinal)), m => Assert.IsType<Linear4Bit>(m.Module));
    }

    [Theory]
    [InlineData(DType.BFloat16)]
    [InlineData(DType.Float16)]
    public void Frozen_16_bit_weights_give_the_logits_of_the_float32_load_within_rounding(DType stored)
    {
        using var dir = new TempFolder();
        using (var source = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 13)) HuggingFaceLlama.Save(source, dir.Path, stored);
        using var wide = ModelLoader.Load(dir.Path);                                        // the same values, widened to float32
        using var narrow = ModelLoader.Load(dir.Path, new ModelLoadOptions { FrozenWeights = FrozenWeightStorage.AsStored });
        Assert.All(narrow.NamedModules().Select(m => m.Module).OfType<Linear>(), l => Assert.Equal(stored, l.Weight.DType));
        Assert.Equal(stored, narrow.Model.EmbedTokens.Weight.DType);
        long narrowBytes = narrow.NamedParameters().Sum(p => p.Tensor.Count * p.Tensor.DType.ElementSize());
        long wideBytes = wide.NamedParameters().Sum(p => p.Tensor.Count * p.Tensor.DType.ElementSize());
        double err = IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(wide), IOTestSupport.Logits(narrow));
        output.WriteLine($"{stored}: weights {narrowBytes:N0} B vs {wideBytes:N0} B in float32; max |logit diff| = {err:E3}");
        Assert.True(err < 1e-4, $"16-bit frozen weights change the logits by {err:E3}");
        Assert.True(narrowBytes < wideBytes * 0.55, $"{narrowBytes} vs {wideBytes}");
    }

    [Fact]
    public void Streamed_quantization_in_small_chunks_equals_quantizing_the_whole_weight()
    {
        var random = new Random(4);
        var weight = new float[37 * 96];
        for (int i = 0; i < weight.Length; i++) weight[i] = (float)(random.NextGaussian() * 0.1);
        foreach (bool doubleQuant in new[] { false, true })
        {
            var whole = QuantizedWeight.Quantize(weight, 37, 96, QuantType.NF4, 32, doubleQuant);
            var streamed = QuantizedWeight.Quantize(37, 96, QuantType.NF4, 32, doubleQuant,
                (first, destination) => weight.AsSpan((int)first, destination.Length).CopyTo(destination), chunkElements: 96);
            Assert.Equal(whole.PackedCodes.ToArray(), streamed.PackedCodes.ToArray());
            Assert.Equal(whole.Absmax.ToArray(), streamed.Absmax.ToArray());
            Assert.Equal(whole.AbsmaxCodes.ToArray(), streamed.AbsmaxCodes.ToArray());
            Assert.Equal(whole.AbsmaxScales.ToArray(), streamed.AbsmaxScales.ToArray());
            Assert.Equal(whole.AbsmaxOffset, streamed.AbsmaxOffset);
        }
    }

    [Fact]
    public void A_non_finite_weight_in_a_four_bit_layer_names_the_file_and_tensor()
    {
        using var dir = new TempFolder();
        using (var source = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1))
        {
            source.StateDict()["model.layers.1.mlp.up_proj.weight"].AsSpan()[5] = float.NaN;
            HuggingFaceLlama.Save(source, dir.Path);
        }
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir.Path, new ModelLoadOptions { Quantization = Nf4 }));
        output.WriteLine(e.Message);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("'model.layers.1.mlp.up_proj.weight'", e.Message);
        Assert.Contains("NaN", e.Message);
    }

    [Fact]
    public void A_model_class_with_a_parameter_the_checkpoint_lacks_is_refused_by_name()
    {
        using var dir = new TempFolder();
        using (var source = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1)) HuggingFaceLlama.Save(source, dir.Path);
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir.Path, c => new WithExtraHead(c)));
        output.WriteLine(e.Message);
        Assert.Contains("'value_head.weight' [1, 32] is missing", e.Message);
        Assert.Contains(nameof(WithExtraHead), e.Message);
    }

    [Fact]
    public void Adapter_options_quantize_exactly_the_layers_the_adapter_targets()
    {
        using var dir = new TempFolder();
        using (var source = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1)) HuggingFaceLlama.Save(source, dir.Path);
        var lora = new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.Parse("q_proj,v_proj"), Layers = [1] };
        using var model = ModelLoader.Load(dir.Path, PeftModel.LoadOptions(lora, Nf4));
        var fourBit = model.NamedModules().Where(m => m.Module is Linear4Bit).Select(m => m.Path).ToArray();
        Assert.Equal(["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"], fourBit);
        using var peft = PeftModel.Create(model, lora, Nf4);
        Assert.All(peft.Plan(), l => Assert.True(l.Quantized, l.Path));
    }

    private static void QuantizeInPlace(LlamaForCausalLM model, QuantizationConfig q)
    {
        foreach (var (path, module) in model.NamedModules().Where(m => m.Module is Linear && m.Path != "lm_head").ToList())
            model.ReplaceModule(path, Linear4Bit.FromLinear((Linear)module, q.Type, q.BlockSize, q.DoubleQuant)).Dispose();
    }

    private static int AssertSameCodes(LlamaForCausalLM expected, LlamaForCausalLM actual)
    {
        var want = expected.NamedModules().Where(m => m.Module is Linear4Bit).ToDictionary(m => m.Path, m => ((Linear4Bit)m.Module).Weight);
        var got = actual.NamedModules().Where(m => m.Module is Linear4Bit).ToDictionary(m => m.Path, m => ((Linear4Bit)m.Module).Weight);
        Assert.Equal(want.Keys.Order(), got.Keys.Order());
        foreach (var (path, w) in want)
        {
            var g = got[path];
            Assert.True(w.PackedCodes.SequenceEqual(g.PackedCodes), $"{path}: packed codes differ");
            Assert.True(w.AbsmaxCodes.SequenceEqual(g.AbsmaxCodes), $"{path}: absmax codes differ");
            Assert.True(w.AbsmaxScales.SequenceEqual(g.AbsmaxScales), $"{path}: absmax scales differ");
            Assert.Equal(w.AbsmaxOffset, g.AbsmaxOffset);
        }
        return want.Count;
    }

    private sealed class WithExtraHead : LlamaForCausalLM
    {
        public WithExtraHead(LlamaConfig config) : base(config) => RegisterModule("value_head", new Linear(config.HiddenSize, 1));
    }
}
