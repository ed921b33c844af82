using System.Text.Json;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.IO;

public class PeftAdapterFileTests(ITestOutputHelper output)
{
    private static void Randomize(PeftModel<LlamaForCausalLM> peft, string adapter, int seed)
    {
        var random = new Random(seed);
        foreach (var (_, layer) in peft.LoRALayers)
        {
            foreach (var t in new[] { layer.LoraA(adapter), layer.LoraB(adapter), layer.Magnitude(adapter) })
                if (t != null)
                {
                    var s = t.AsSpan();
                    for (int i = 0; i < s.Length; i++) s[i] += (float)(random.NextDouble() - 0.5) * 0.2f;
                }
        }
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Save_then_load_into_a_fresh_model_gives_identical_logits(bool dora, bool rslora)
    {
        using var dir = new TempFolder();
        var config = new LoRAConfig
        {
            Rank = 4, Alpha = 8, UseDoRA = dora, UseRsLoRA = rslora, Targets = TargetModules.AllLinear,
            RankPattern = new Dictionary<string, int> { ["down_proj"] = 2 },
        };
        using var peft = PeftModel.Create(new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1), config);
        Randomize(peft, "default", 2);
        peft.Model.Eval();
        PeftAdapterFile.Save(peft, dir.Path, baseModelNameOrPath: "tiny-llama");

        using var json = JsonDocument.Parse(File.ReadAllText(dir.File("adapter_config.json")));
        Assert.Equal("LORA", json.RootElement.GetProperty("peft_type").GetString());
        Assert.Equal(dora, json.RootElement.GetProperty("use_dora").GetBoolean());
        Assert.Equal(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
            json.RootElement.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()));
        using (var file = SafetensorsFile.Open(dir.File("adapter_model.safetensors")))
        {
            Assert.Equal("pt", file.Metadata["format"]);
            Assert.True(file.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
            Assert.Equal([2, 48], file.GetInfo("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight").Shape);
            Assert.Equal(dora, file.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"));
        }

        using var loaded = PeftAdapterFile.LoadInto(new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1), dir.Path);
        loaded.Model.Eval();
        double err = IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(peft.Model), IOTestSupport.Logits(loaded.Model));
        output.WriteLine($"dora={dora} rslora={rslora}: max |logit diff| = {err:E3}");
        Assert.Equal(0, err);
        Assert.Equal(peft.GetConfig("default").Scaling, loaded.GetConfig("default").Scaling);
    }

    [Fact]
    public void Second_adapter_loads_into_an_existing_peft_model()
    {
        using var dir = new TempFolder();
        using var source = PeftModel.Create(new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1), new LoRAConfig { Rank = 2, Targets = TargetModules.List("q_proj", "v_proj") });
        Randomize(source, "default", 4);
        PeftAdapterFile.Save(source, dir.Path);
        using var target = PeftModel.Create(new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1), new LoRAConfig { Rank = 2, Targets = TargetModules.List("q_proj") });
        PeftAdapterFile.Load(target, dir.Path, "other");
        target.SetAdapter("other");
        source.Model.Eval();
        target.Model.Eval();
        Assert.Equal(0, IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(source.Model), IOTestSupport.Logits(target.Model)));
    }

    [Fact]
    public void Hand_written_peft_folder_loads()
    {
        using var dir = new TempFolder();
        // What PEFT writes for LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], layers_to_transform=[1]).
        File.WriteAllText(dir.File("adapter_config.json"), """
            {"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "tiny", "bias": "none",
             "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "layer_replication": null,
             "layers_pattern": null, "layers_to_transform": [1], "loftq_config": {}, "lora_alpha": 4, "lora_dropout": 0.05,
             "megatron_config": null, "megatron_core": "megatron.core", "modules_to_save": null, "peft_type": "LORA",
             "r": 2, "rank_pattern": {}, "revision": null, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM",
             "use_dora": false, "use_rslora": false}
            """);
        var random = new Random(3);
        using var a = Tensor.RandN([2, 32], random, 0.1f);
        using var b = Tensor.RandN([32, 2], random, 0.1f);
        Safetensors.Save(dir.File("adapter_model.safetensors"),
            [("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", a), ("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", b)],
            new Dictionary<string, string> { ["format"] = "pt" }, DType.BFloat16);

        using var peft = PeftAdapterFile.LoadInto(new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1), dir.Path);
        var layer = Assert.Single(peft.LoRALayers);
        Assert.Equal("model.layers.1.self_attn.q_proj", layer.Path);
        Assert.Equal(2f, layer.Layer.GetSettings("default").Scaling);
        using var a16 = a.To(DType.BFloat16);
        Assert.Equal(a16.ToArray(), layer.Layer.LoraA("default").ToArray());
    }

    [Fact]
    public void Mismatches_are_all_listed_in_one_error_and_the_model_is_untouched()
    {
        using var dir = new TempFolder();
        File.WriteAllText(dir.File("adapter_config.json"), """{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}""");
        using var good = Tensor.Zeros(2, 32);
        using var bad = Tensor.Zeros(32, 3);
        Safetensors.Save(dir.File("adapter_model.safetensors"),
        [
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", good),
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", bad),
            ("base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight", good),
        ]);
        using var model = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1);
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapterFile.LoadInto(model, dir.Path));
        output.WriteLine(e.Message);
        Assert.Contains("adapter_model.safetensors", e.Message);
        Assert.Contains("q_proj.lora_B.weight': expected [32, 2], found [32, 3]", e.Message);
        Assert.Contains("x_proj.lora_A.weight", e.Message);
        Assert.Contains("layers.1.self_attn.q_proj.lora_A.weight", e.Message);
        Assert.Contains("layers.1.self_attn.q_proj.lora_B.weight", e.Message);
        Assert.DoesNotContain(model.NamedModules(), m => m.Module is LoRALinear);
    }
}
