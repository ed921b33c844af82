using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Methods.IA3;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Methods.VeRA;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.IO;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Methods.Core;

/// <summary>
/// Adapters trained on a model with interleaved RoPE (llama2.c) are written in Hugging Face's q/k row order: they reload
/// into the same model unchanged and fit the model HuggingFaceLlama.Save converts it into.
/// </summary>
public class InterleavedRopeAdapterTests(ITestOutputHelper output)
{
    private static readonly LlamaConfig Config = IOTestSupport.Tiny with { RopeInterleaved = true }; // 4 heads, 2 kv heads, head_dim 8

    private static LlamaForCausalLM Base() => new(Config, seed: 11);

    /// <summary>The base converted to a Hugging Face folder and loaded back (rotate-half RoPE, q/k rows permuted).</summary>
    private static LlamaForCausalLM Converted(TempFolder dir)
    {
        string folder = dir.File("hf");
        using (var model = Base()) HuggingFaceLlama.Save(model, folder);
        return HuggingFaceLlama.Load(folder);
    }

    private static void Randomize(Tensor t, int seed, float center, float scale)
    {
        var r = new Random(seed);
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = center * s[i] + scale * (float)(r.NextDouble() * 2 - 1);
    }

    /// <summary>(a) reloaded into the same kind of model: identical (or within <paramref name="sameTolerance"/>); (b) on the converted model: within 1e-5 of (a).</summary>
    private void AssertPortable(string method, float[] trained, float[] reloaded, float[] converted, double sameTolerance = 0)
    {
        double same = IOTestSupport.MaxAbsDiff(trained, reloaded), hf = IOTestSupport.MaxAbsDiff(reloaded, converted), moved = IOTestSupport.MaxAbsDiff(trained, Logits(Base()));
        output.WriteLine($"{method}: reloaded vs trained max |Δlogit| = {same:E3}; converted HF vs reloaded = {hf:E3} (the adapter moves logits by {moved:E3})");
        Assert.True(same <= sameTolerance, $"{method}: reloaded logits differ from the trained ones by {same:E3}");
        Assert.True(hf < 1e-5, $"{method}: logits on the converted Hugging Face model differ by {hf:E3}");
        Assert.True(moved > 1e-3, $"{method}: the adapter changes the logits by only {moved:E3}, so the test would not notice a wrong order");
    }

    private static float[] Logits(LlamaForCausalLM model)
    {
        using (model) return IOTestSupport.Logits(model);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LoRA_and_DoRA_adapters_fit_the_converted_model(bool dora)
    {
        using var dir = new TempFolder();
        string folder = dir.File("adapter");
        float[] trained;
        float[] modelB;
        using (var peft = PeftModel.Create(Base(), new LoRAConfig { Rank = 2, Alpha = 4, UseDoRA = dora, Targets = TargetModules.Parse("q_proj,k_proj,v_proj"), Seed = 1 }))
        {
            int seed = 0;
            foreach (var (_, layer) in peft.LoRALayers)
            {
                Randomize(layer.LoraA("default"), ++seed, 1f, 0.3f);
                Randomize(layer.LoraB("default"), ++seed, 0f, 0.3f);
                if (layer.Magnitude("default") is { } m) Randomize(m, ++seed, 1f, 0.2f);
            }
            trained = IOTestSupport.Logits(peft.Model);
            modelB = peft.LoRALayers.First(l => l.Path.EndsWith("q_proj", StringComparison.Ordinal)).Layer.LoraB("default").ToArray();
            PeftAdapterFile.Save(peft, folder);
        }
        using (var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapterFile.WeightsFileName)))
        using (var stored = file.ReadTensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"))
            Assert.NotEqual(modelB, stored.ToArray()); // the rows really moved into Hugging Face's order

        float[] reloaded, converted;
        using (var peft = PeftAdapterFile.LoadInto(Base(), folder)) reloaded = IOTestSupport.Logits(peft.Model);
        using (var peft = PeftAdapterFile.LoadInto(Converted(dir), folder)) converted = IOTestSupport.Logits(peft.Model);
        AssertPortable(dora ? "DoRA" : "LoRA", trained, reloaded, converted);
    }

    [Fact]
    public void IA3_output_vectors_of_k_proj_fit_the_converted_model()
    {
        using var dir = new TempFolder();
        string folder = dir.File("adapter");
        float[] trained;
        using (var ia3 = IA3Model<LlamaForCausalLM>.Create(Base(), new IA3Config()))
        {
            int seed = 0;
            foreach (var (_, layer) in ia3.IA3Layers) Randomize(layer.Vector("default"), ++seed, 1f, 0.5f);
            trained = IOTestSupport.Logits(ia3.Model);
            IA3AdapterFile.Save(ia3, folder);
        }
        float[] reloaded, converted;
        using (var ia3 = IA3AdapterFile.LoadInto(Base(), folder)) reloaded = IOTestSupport.Logits(ia3.Model);
        using (var ia3 = IA3AdapterFile.LoadInto(Converted(dir), folder)) converted = IOTestSupport.Logits(ia3.Model);
        AssertPortable("IA3", trained, reloaded, converted);
    }

    [Fact]
    public void Delta_LoRA_base_change_fits_the_converted_model()
    {
        using var dir = new TempFolder();
        string folder = dir.File("adapter");
        float[] trained;
        var config = new LoRAConfig
        {
            Rank = 2, Alpha = 4, Targets = TargetModules.Parse("q_proj,k_proj"), Seed = 3,
            DeltaLoRA = new DeltaLoRAOptions { StartStep = 1, UpdateRatio = 2f },
        };
        using (var peft = PeftModel.Create(Base(), config))
        using (var updater = DeltaLoRAUpdater.Create(peft))
        {
            for (int step = 1; step <= 3; step++)
            {
                int seed = 10 * step;
                foreach (var (_, layer) in peft.LoRALayers)
                {
                    Randomize(layer.LoraA("default"), ++seed, 1f, 0.3f);
                    Randomize(layer.LoraB("default"), ++seed, 0.5f, 0.3f);
                }
                updater.AfterStep(step);
            }
            trained = IOTestSupport.Logits(peft.Model);
            DeltaLoRAFile.Save(peft, updater, folder);
        }
        float[] reloaded, converted;
        using (var peft = DeltaLoRAFile.LoadInto(Base(), folder)) reloaded = IOTestSupport.Logits(peft.Model);
        using (var peft = DeltaLoRAFile.LoadInto(Converted(dir), folder)) converted = IOTestSupport.Logits(peft.Model);
        // ΔW is stored factored and added back in one product, so the reloaded base rounds differently from the trained one.
        AssertPortable("Delta-LoRA", trained, reloaded, converted, sameTolerance: 1e-5);
    }

    [Fact]
    public void Prefix_keys_fit_the_converted_model()
    {
        using var dir = new TempFolder();
        string folder = dir.File("adapter");
        float[] trained;
        using (var model = Base())
        {
            var peft = PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 3, Seed = 2 });
            Randomize(peft.Encoder("default").Embedding.Weight, 5, 0f, 1f);
            trained = IOTestSupport.Logits(model);
            PromptLearningAdapterFile.Save(peft, folder);
        }
        float[] reloaded, converted;
        using (var model = Base())
        {
            using var loaded = PromptLearningAdapterFile.LoadInto(model, folder);
            reloaded = IOTestSupport.Logits(model);
        }
        using (var model = Converted(dir))
        {
            using var loaded = PromptLearningAdapterFile.LoadInto(model, folder);
            converted = IOTestSupport.Logits(model);
        }
        AssertPortable("prefix tuning", trained, reloaded, converted);
    }

    [Fact]
    public void VeRA_refuses_q_and_k_of_an_interleaved_model_and_ports_other_layers()
    {
        using var dir = new TempFolder();
        using (var qk = VeraModel.Create(Base(), new VeraConfig { Rank = 4, Targets = TargetModules.Parse("q_proj,v_proj") }))
        {
            var e = Assert.Throws<InvalidOperationException>(() => VeraAdapterFile.Save(qk, dir.File("qk")));
            Assert.Contains("'model.layers.0.self_attn.q_proj'", e.Message);
            Assert.Contains("interleaved RoPE", e.Message);
        }
        string folder = dir.File("adapter");
        float[] trained;
        using (var peft = VeraModel.Create(Base(), new VeraConfig { Rank = 4, Targets = TargetModules.Parse("v_proj,o_proj") }))
        {
            int seed = 0;
            foreach (var (_, layer) in peft.VeraLayers) Randomize(layer.LambdaB("default"), ++seed, 0f, 1f);
            trained = IOTestSupport.Logits(peft.Model);
            VeraAdapterFile.Save(peft, folder);
        }
        float[] reloaded, converted;
        using (var peft = VeraAdapterFile.LoadInto(Base(), folder)) reloaded = IOTestSupport.Logits(peft.Model);
        using (var peft = VeraAdapterFile.LoadInto(Converted(dir), folder)) converted = IOTestSupport.Logits(peft.Model);
        AssertPortable("VeRA (v, o)", trained, reloaded, converted);
    }
}
