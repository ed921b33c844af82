using System.Runtime.InteropServices;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.IO;
using PeftGen.Tests.TestSupport;
using PeftGen.Training;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Methods.LoRA;

/// <summary>
/// <see cref="PeftMerge"/> and the streaming convert write, tensor by tensor, the very bytes of the in-memory path
/// (load, <see cref="PeftAdapterFile.LoadInto"/>, <see cref="PeftModel{TModel}.MergeAndUnload"/>, <see cref="HuggingFaceLlama.Save"/>),
/// hold about one tensor at a time, and leave no output (and any previous output unchanged) when they fail midway.
/// </summary>
public class StreamingMergeTests(ITestOutputHelper output)
{
    /// <summary>GQA (4 heads, 2 kv heads, head_dim 8), untied head, 3 layers.</summary>
    private static readonly LlamaConfig Config = IOTestSupport.Tiny with { NumHiddenLayers = 3 };

    public enum Source { HuggingFace, HuggingFaceBf16Sharded, Llama2C }

    // ---- equality with the in-memory path ------------------------------------------------------------------

    [Theory]
    [InlineData(Source.HuggingFace, false, false, DType.Float32)]
    [InlineData(Source.HuggingFace, false, false, DType.BFloat16)]
    [InlineData(Source.HuggingFace, true, false, DType.Float32)]
    [InlineData(Source.HuggingFace, true, false, DType.BFloat16)]
    [InlineData(Source.HuggingFace, false, true, DType.Float16)]
    [InlineData(Source.HuggingFaceBf16Sharded, true, true, DType.BFloat16)]
    [InlineData(Source.HuggingFaceBf16Sharded, false, false, DType.Float32)]
    [InlineData(Source.Llama2C, false, false, DType.Float32)]
    [InlineData(Source.Llama2C, false, false, DType.BFloat16)]
    [InlineData(Source.Llama2C, true, false, DType.Float32)]
    [InlineData(Source.Llama2C, true, true, DType.BFloat16)]
    public void Streaming_merge_writes_the_bytes_of_the_in_memory_merge(Source source, bool dora, bool rsLoRA, DType storeAs)
    {
        using var dir = new TempFolder();
        string basePath = WriteBase(dir, source, Config);
        string adapter = WriteAdapter(basePath, dir.File("adapter"), dora, rsLoRA, TargetModules.AllLinear);
        AssertSameAsInMemory(dir, basePath, adapter, storeAs, expectedLayers: Config.NumHiddenLayers * 7); // all-linear leaves lm_head out
    }

    [Fact]
    public void Layer_filters_and_rank_patterns_merge_as_in_memory()
    {
        using var dir = new TempFolder();
        string basePath = WriteBase(dir, Source.Llama2C, Config);
        var config = new LoRAConfig
        {
            Rank = 4, Alpha = 6, Targets = TargetModules.List("q_proj", "k_proj", "down_proj"), Layers = [0, 2],
            RankPattern = new Dictionary<string, int> { ["k_proj"] = 2 }, AlphaPattern = new Dictionary<string, float> { ["down_proj"] = 3 }, Seed = 9,
        };
        string adapter = WriteAdapter(basePath, dir.File("adapter"), config);
        AssertSameAsInMemory(dir, basePath, adapter, DType.BFloat16, expectedLayers: 6);
    }

    [Fact]
    public void Adapters_that_do_not_fit_are_refused_with_the_message_loading_gives()
    {
        using var dir = new TempFolder();
        string basePath = WriteBase(dir, Source.HuggingFace, Config);
        using var llama = PretrainedModel.LoadModel(basePath);
        var cases = new List<string>();

        // Hand-written adapters (PeftModel.Create would refuse to build them): the output head, a rank above min(in, out), a missing key.
        string Written(string name, LoRAConfig config, IEnumerable<(string Path, int In, int Out, int Rank)> layers)
        {
            var tensors = layers.SelectMany(l => new[]
            {
                ($"base_model.model.{l.Path}.lora_A.weight", Tensor.Zeros(l.Rank, l.In)),
                ($"base_model.model.{l.Path}.lora_B.weight", Tensor.Zeros(l.Out, l.Rank)),
            }).ToList();
            PeftAdapterFile.Save(llama, config, tensors, dir.File(name));
            foreach (var (_, t) in tensors) t.Dispose();
            cases.Add(dir.File(name));
            return dir.File(name);
        }
        Written("head", new LoRAConfig { Rank = 2, Targets = TargetModules.List("lm_head") }, [("lm_head", 32, 16, 2)]);
        Written("rank", new LoRAConfig { Rank = 40, Targets = TargetModules.List("k_proj"), Layers = [1] }, [("model.layers.1.self_attn.k_proj", 32, 16, 40)]);
        Written("missing", new LoRAConfig { Rank = 2, Targets = TargetModules.List("v_proj") }, [("model.layers.0.self_attn.v_proj", 32, 16, 2)]);
        // Keys of layers the config does not adapt; a misspelt target that matches no layer (and so expects no keys).
        string unknown = WriteAdapter(basePath, dir.File("unknown"), new LoRAConfig { Rank = 2, Targets = TargetModules.List("v_proj") });
        string configPath = Path.Combine(unknown, PeftAdapterFile.ConfigFileName);
        File.WriteAllText(configPath, File.ReadAllText(configPath).Replace("\"v_proj\"", "\"v_prj\""));
        cases.Add(unknown);
        string misspelt = dir.File("misspelt");
        Directory.CreateDirectory(misspelt);
        File.Copy(configPath, Path.Combine(misspelt, PeftAdapterFile.ConfigFileName));
        Safetensors.Save(Path.Combine(misspelt, PeftAdapterFile.WeightsFileName), Array.Empty<(string, Tensor)>(), new Dictionary<string, string> { ["format"] = "pt" });
        cases.Add(misspelt);

        foreach (var adapter in cases)
        {
            var expected = Assert.ThrowsAny<Exception>(() => PeftAdapterFile.LoadInto(PretrainedModel.LoadModel(basePath), adapter));
            var actual = Assert.ThrowsAny<Exception>(() => PeftMerge.MergeToFolder(basePath, adapter, dir.File("out")));
            output.WriteLine(actual.Message);
            Assert.Equal(expected.GetType(), actual.GetType());
            Assert.Equal(expected.Message, actual.Message);
            Assert.False(Directory.Exists(dir.File("out")));
        }
    }

    [StoriesTheory]
    [InlineData(false, DType.Float32)]
    [InlineData(false, DType.BFloat16)]
    [InlineData(true, DType.Float32)]
    [InlineData(true, DType.BFloat16)]
    public void Stories260K_streaming_merge_writes_the_bytes_of_the_in_memory_merge(bool dora, DType storeAs)
    {
        using var dir = new TempFolder();
        string adapter = WriteAdapter(SharedModels.Stories260KCheckpoint!, dir.File("adapter"), dora, rsLoRA: false, TargetModules.AllLinear);
        AssertSameAsInMemory(dir, SharedModels.Stories260KCheckpoint!, adapter, storeAs, expectedLayers: 5 * 7);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Streaming_convert_writes_the_bytes_of_load_and_save(DType storeAs)
    {
        using var dir = new TempFolder();
        string checkpoint = WriteBase(dir, Source.Llama2C, Config);
        AssertConvertSameAsInMemory(dir, checkpoint, storeAs);
    }

    [StoriesTheory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void Stories260K_streaming_convert_writes_the_bytes_of_load_and_save(DType storeAs)
    {
        using var dir = new TempFolder();
        AssertConvertSameAsInMemory(dir, SharedModels.Stories260KCheckpoint!, storeAs);
    }

    // ---- failures leave nothing behind ---------------------------------------------------------------------

    [Theory]
    [InlineData(0.5)]   // cut in the middle of the data, inside a tensor
    [InlineData(-2)]    // the header is intact, the last tensor's data lacks its final 2 bytes
    public void Truncated_base_fails_naming_the_file_and_leaves_previous_output_unchanged(double cut)
    {
        using var dir = new TempFolder();
        string basePath = WriteBase(dir, Source.HuggingFace, Config);
        string adapter = WriteAdapter(basePath, dir.File("adapter"), dora: false, rsLoRA: false, TargetModules.AllLinear);
        string previous = dir.File("previous");
        PeftMerge.MergeToFolder(basePath, adapter, previous);
        var before = Snapshot(previous);

        string weights = Path.Combine(basePath, HuggingFaceLlama.WeightsFileName);
        long length = new FileInfo(weights).Length;
        using (var stream = new FileStream(weights, FileMode.Open)) stream.SetLength(cut > 0 ? (long)(length * cut) : length + (long)cut);

        foreach (var target in new[] { previous, dir.File("fresh") })
        {
            var e = Assert.ThrowsAny<IOException>(() => PeftMerge.MergeToFolder(basePath, adapter, target, DType.BFloat16));
            output.WriteLine(e.Message);
            Assert.Contains(weights, e.Message);
        }
        Assert.Equal(before, Snapshot(previous));
        Assert.False(Directory.Exists(dir.File("fresh")), "a failed merge leaves no output folder");
    }

    [Fact]
    public void Base_cut_short_while_streaming_fails_naming_the_file_and_leaves_no_output()
    {
        using var dir = new TempFolder();
        string basePath = WriteBase(dir, Source.HuggingFace, Config);
        string adapter = WriteAdapter(basePath, dir.File("adapter"), dora: true, rsLoRA: false, TargetModules.AllLinear);
        string previous = dir.File("previous");
        PeftMerge.MergeToFolder(basePath, adapter, previous);
        var before = Snapshot(previous);
        string weights = Path.Combine(basePath, HuggingFaceLlama.WeightsFileName);

        // After the first tensor is written, the base file loses its second half (it was opened and validated whole).
        var written = new List<string>();
        var e = Assert.Throws<SafetensorsFormatException>(() => PeftMerge.Merge(basePath, adapter, previous, DType.Float32, default, name =>
        {
            if (written.Count == 0)
                using (var stream = new FileStream(weights, FileMode.Open, FileAccess.Write, FileShare.ReadWrite)) stream.SetLength(stream.Length / 2);
            written.Add(name);
        }));
        output.WriteLine(e.Message);
        Assert.Contains(weights, e.Message);
        Assert.Contains("cut short", e.Message);
        Assert.True(written.Count > 1, "the failure came midway through the stream");
        Assert.Equal(before, Snapshot(previous));
    }

    [Fact]
    public void Llama2C_base_cut_short_while_streaming_fails_naming_the_file()
    {
        using var dir = new TempFolder();
        string checkpoint = WriteBase(dir, Source.Llama2C, Config);
        string adapter = WriteAdapter(checkpoint, dir.File("adapter"), dora: false, rsLoRA: false, TargetModules.AllLinear);
        var e = Assert.Throws<InvalidDataException>(() => PeftMerge.Merge(checkpoint, adapter, dir.File("out"), DType.Float32, default, _ =>
        {
            using var stream = new FileStream(checkpoint, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
            stream.SetLength(64);
        }));
        Assert.Contains(checkpoint, e.Message);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public void Non_finite_merged_weight_or_cancellation_leaves_previous_output_unchanged()
    {
        using var dir = new TempFolder();
        string basePath = WriteBase(dir, Source.HuggingFace, Config);
        string adapter = WriteAdapter(basePath, dir.File("adapter"), dora: false, rsLoRA: false, TargetModules.AllLinear);
        string previous = dir.File("previous");
        PeftMerge.MergeToFolder(basePath, adapter, previous);
        var before = Snapshot(previous);

        // Cancelled after a few tensors: OperationCanceledException, nothing changed.
        using var cancel = new CancellationTokenSource();
        int count = 0;
        Assert.ThrowsAny<OperationCanceledException>(() => PeftMerge.Merge(basePath, adapter, previous, DType.BFloat16, cancel.Token, _ =>
        {
            if (++count == 5) cancel.Cancel();
        }));
        Assert.Equal(before, Snapshot(previous));

        // An adapter whose last layer's B holds a NaN: refused when the adapter is opened, before anything is written.
        string nan = WriteAdapter(basePath, dir.File("nan"), new LoRAConfig { Rank = 2, Alpha = 4, Targets = TargetModules.List("v_proj"), Layers = [2] },
            peft => peft.LoRALayers.Single().Layer.LoraB("default").AsSpan()[3] = float.NaN);
        var written = new List<string>();
        var e = Assert.Throws<InvalidDataException>(() => PeftMerge.Merge(basePath, nan, previous, DType.Float32, default, written.Add));
        output.WriteLine(e.Message);
        Assert.Contains("model.layers.2.self_attn.v_proj", e.Message);
        Assert.Contains("non-finite", e.Message);
        Assert.Empty(written);
        Assert.Equal(before, Snapshot(previous));

        // Float16 overflow of a merged weight is caught after rounding.
        string huge = WriteAdapter(basePath, dir.File("huge"), new LoRAConfig { Rank = 2, Alpha = 4, Targets = TargetModules.List("o_proj"), Layers = [1] },
            peft => peft.LoRALayers.Single().Layer.LoraB("default").AsSpan().Fill(1e7f));
        Assert.Throws<InvalidDataException>(() => PeftMerge.MergeToFolder(basePath, huge, previous, DType.Float16));
        Assert.Equal(before, Snapshot(previous));
        Assert.Equal(["adapter", "base", "huge", "nan", "previous"], Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Output_folder_equal_to_the_base_folder_is_refused()
    {
        using var dir = new TempFolder();
        string basePath = WriteBase(dir, Source.HuggingFace, Config);
        string adapter = WriteAdapter(basePath, dir.File("adapter"), dora: false, rsLoRA: false, TargetModules.AllLinear);
        var e = Assert.Throws<ArgumentException>(() => PeftMerge.MergeToFolder(basePath, adapter, basePath + "/"));
        Assert.Contains("overwrite the base", e.Message);
    }

    // ---- memory ----------------------------------------------------------------------------------------------

    [Fact]
    public void Streaming_merge_and_convert_hold_about_one_tensor_whatever_the_depth()
    {
        // 12 layers whose largest tensor (an MLP projection) is a small part of the model.
        var config = Config with { HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 12, VocabSize = 32, TieWordEmbeddings = true };
        using var dir = new TempFolder();
        string checkpoint = WriteBase(dir, Source.Llama2C, config);
        string adapter = WriteAdapter(checkpoint, dir.File("adapter"), dora: true, rsLoRA: false, TargetModules.AllLinear);
        var shapes = HuggingFaceLlama.ExpectedShapes(config);
        long modelBytes = 4 * shapes.Values.Sum(s => ShapeUtil.Count(s));
        long largest = 4 * shapes.Values.Max(s => ShapeUtil.Count(s));
        long adapterBytes = new FileInfo(Path.Combine(adapter, PeftAdapterFile.WeightsFileName)).Length;

        long mergePeak = PeakTensorBytes(() => PeftMerge.MergeToFolder(checkpoint, adapter, dir.File("merged"), DType.BFloat16));
        long convertPeak = PeakTensorBytes(() => HuggingFaceLlama.ConvertLlama2C(checkpoint, dir.File("converted"), DType.BFloat16));
        long inMemoryPeak = PeakTensorBytes(() =>
        {
            using var llama = PretrainedModel.LoadModel(checkpoint);
            PeftAdapterFile.LoadInto(llama, adapter).MergeAndUnload(DType.BFloat16);
            HuggingFaceLlama.Save(llama, dir.File("in-memory"), DType.BFloat16);
        });
        output.WriteLine($"model {modelBytes:N0} B float32, largest tensor {largest:N0} B, adapter file {adapterBytes:N0} B");
        output.WriteLine($"peak tensor bytes: streaming merge {mergePeak:N0}, streaming convert {convertPeak:N0}, in-memory merge {inMemoryPeak:N0}");

        // Convert holds one tensor (and its q/k permutation); merge one layer's base, merged weight and s·B·A, plus that layer's factors.
        Assert.True(convertPeak <= 2 * largest, $"convert held {convertPeak:N0} bytes of tensors; one tensor is at most {largest:N0}");
        Assert.True(mergePeak <= 4 * largest + adapterBytes, $"merge held {mergePeak:N0} bytes of tensors; one tensor is at most {largest:N0}");
        Assert.True(mergePeak < modelBytes / 4, $"merge held {mergePeak:N0} bytes of a {modelBytes:N0}-byte model");
        Assert.True(inMemoryPeak > modelBytes, "the in-memory path, for contrast, holds the whole model");
    }

    /// <summary>The most bytes of tensor storage this thread held at once while <paramref name="action"/> ran, above what it held before.</summary>
    private static long PeakTensorBytes(Action action)
    {
        long live = HostMemoryStats.Live;
        HostMemoryStats.ResetPeak();
        action();
        return HostMemoryStats.Peak - live;
    }

    // ---- helpers ---------------------------------------------------------------------------------------------

    private void AssertSameAsInMemory(TempFolder dir, string basePath, string adapter, DType storeAs, int expectedLayers, string tag = "")
    {
        string streamed = dir.File("streamed" + tag), inMemory = dir.File("in-memory" + tag);
        var merged = PeftMerge.MergeToFolder(basePath, adapter, streamed, storeAs);
        int layers;
        using (var llama = PretrainedModel.LoadModel(basePath))
        {
            var peft = PeftAdapterFile.LoadInto(llama, adapter);
            layers = peft.Plan().Count;
            peft.MergeAndUnload(storeAs);
            HuggingFaceLlama.Save(llama, inMemory, storeAs);
        }
        Assert.Equal(expectedLayers, layers);
        Assert.Equal(layers, merged.AdaptedLayers.Count);
        AssertSameFolder(inMemory, streamed);

        // The merge did something: the merged weights are not the base's.
        using var baseWeights = CheckpointReader.Open(basePath);
        using var file = SafetensorsFile.Open(Path.Combine(streamed, HuggingFaceLlama.WeightsFileName));
        string first = merged.AdaptedLayers[0] + ".weight";
        using var original = baseWeights.ReadFloat32(first);
        using var result = file.ReadTensor(first);
        output.WriteLine($"{first}: merge moved weights by up to {IOTestSupport.MaxAbsDiff(original.ToArray(), result.ToArray()):E3}");
        Assert.True(IOTestSupport.MaxAbsDiff(original.ToArray(), result.ToArray()) > 1e-3, "the adapter should change the merged weight");
    }

    private static void AssertConvertSameAsInMemory(TempFolder dir, string checkpoint, DType storeAs)
    {
        string streamed = dir.File("streamed"), inMemory = dir.File("in-memory");
        var config = HuggingFaceLlama.ConvertLlama2C(checkpoint, streamed, storeAs);
        using (var model = Llama2Checkpoint.Load(checkpoint))
        {
            Assert.Equal(model.Config, config);
            HuggingFaceLlama.Save(model, inMemory, storeAs);
        }
        AssertSameFolder(inMemory, streamed);
    }

    private static void AssertSameFolder(string expected, string actual)
    {
        Assert.Equal(Snapshot(expected).Keys, Snapshot(actual).Keys);
        foreach (var name in new[] { HuggingFaceLlama.ConfigFileName, HuggingFaceLlama.WeightsFileName })
            Assert.True(File.ReadAllBytes(Path.Combine(expected, name)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(actual, name))), $"{name} differs");
    }

    private static SortedDictionary<string, string> Snapshot(string folder) =>
        new(Directory.EnumerateFiles(folder).ToDictionary(f => Path.GetFileName(f), f => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f)))),
            StringComparer.Ordinal);

    /// <summary>Writes a random base model of <paramref name="config"/> in the given form and returns its path.</summary>
    private static string WriteBase(TempFolder dir, Source source, LlamaConfig config)
    {
        string folder = dir.File("base");
        switch (source)
        {
            case Source.HuggingFace:
                using (var model = new LlamaForCausalLM(config, seed: 3)) HuggingFaceLlama.Save(model, folder);
                return folder;
            case Source.HuggingFaceBf16Sharded:
                using (var model = new LlamaForCausalLM(config, seed: 3))
                {
                    HuggingFaceLlama.Save(model, folder, DType.BFloat16);
                    var all = model.NamedParameters().ToList();
                    var map = new Dictionary<string, string>();
                    for (int shard = 0; shard < 2; shard++)
                    {
                        string name = $"model-0000{shard + 1}-of-00002.safetensors";
                        var part = all.Where((_, i) => i % 2 == shard).ToList();
                        Safetensors.Save(Path.Combine(folder, name), part, new Dictionary<string, string> { ["format"] = "pt" }, DType.BFloat16);
                        foreach (var (n, _) in part) map[n] = name;
                    }
                    File.Delete(Path.Combine(folder, HuggingFaceLlama.WeightsFileName));
                    File.WriteAllText(Path.Combine(folder, HuggingFaceLlama.IndexFileName),
                        System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, object> { ["metadata"] = new Dictionary<string, long>(), ["weight_map"] = map }));
                }
                return folder;
            default:
                string path = Path.Combine(folder, "model.bin");
                Directory.CreateDirectory(folder);
                using (var model = new LlamaForCausalLM(config with { RopeInterleaved = true }, seed: 3)) WriteLlama2C(model, path);
                return path;
        }
    }

    /// <summary>Writes <paramref name="model"/> as a llama2.c checkpoint (version 0: header, then each kind of weight for all layers).</summary>
    private static void WriteLlama2C(LlamaForCausalLM model, string path)
    {
        var c = model.Config;
        var parameters = model.StateDict();
        using var stream = File.Create(path);
        int[] header = [c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads,
            c.TieWordEmbeddings ? c.VocabSize : -c.VocabSize, c.MaxPositionEmbeddings];
        stream.Write(MemoryMarshal.AsBytes(header.AsSpan()));
        Write("model.embed_tokens.weight");
        foreach (var kind in (string[])["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "post_attention_layernorm", "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"])
            for (int i = 0; i < c.NumHiddenLayers; i++) Write($"model.layers.{i}.{kind}.weight");
        Write("model.norm.weight");
        stream.Write(new byte[4L * c.MaxPositionEmbeddings * c.HeadDim]); // RoPE tables, unused
        if (!c.TieWordEmbeddings) Write("lm_head.weight");

        void Write(string name) => stream.Write(MemoryMarshal.AsBytes(parameters[name].AsSpan()));
    }

    private static string WriteAdapter(string basePath, string folder, bool dora, bool rsLoRA, TargetModules targets) =>
        WriteAdapter(basePath, folder, new LoRAConfig { Rank = 4, Alpha = 8, UseDoRA = dora, UseRsLoRA = rsLoRA, Targets = targets, Seed = 7 });

    /// <summary>An adapter for the base at <paramref name="basePath"/> whose B (and DoRA magnitude) hold random values, so merging changes the weights.</summary>
    private static string WriteAdapter(string basePath, string folder, LoRAConfig config, Action<PeftModel<LlamaForCausalLM>>? edit = null)
    {
        using var llama = PretrainedModel.LoadModel(basePath);
        var peft = PeftModel.Create(llama, config);
        var random = new Random(5);
        foreach (var (_, layer) in peft.LoRALayers)
        {
            foreach (ref float b in layer.LoraB("default").AsSpan()) b = (float)(random.NextDouble() - 0.5) * 0.4f;
            if (layer.Magnitude("default") is { } m)
                foreach (ref float v in m.AsSpan()) v *= 1 + (float)(random.NextDouble() - 0.5) * 0.2f;
        }
        edit?.Invoke(peft);
        PeftAdapterFile.Save(peft, folder);
        return folder;
    }
}
