using System.Diagnostics;
using System.Text;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.IO;

/// <summary>
/// Seeded corruption of valid safetensors files, config.json and adapter folders: every case ends in a library
/// exception (InvalidDataException or SafetensorsFormatException) quickly, never another exception type or a hang.
/// </summary>
public class FormatMutationTests(ITestOutputHelper output)
{
    private static readonly byte[] Replacements = [.. "0123456789-\"{}[],:x"u8, 0xFF];

    private static bool IsLibraryError(Exception e) => e is InvalidDataException or SafetensorsFormatException;

    /// <summary>Runs <paramref name="load"/>; returns false when it succeeded (some mutations keep a file valid).</summary>
    private static bool ExpectLibraryErrorOrSuccess(Action load, string label, ref double slowestMs)
    {
        var watch = Stopwatch.StartNew();
        bool failed = false;
        try
        {
            load();
        }
        catch (Exception e) when (IsLibraryError(e))
        {
            failed = true;
        }
        catch (Exception e)
        {
            Assert.Fail($"{label}: {e.GetType().Name} instead of a format error: {e.Message}");
        }
        watch.Stop();
        slowestMs = Math.Max(slowestMs, watch.Elapsed.TotalMilliseconds);
        Assert.True(watch.Elapsed.TotalSeconds < 1, $"{label} took {watch.Elapsed.TotalMilliseconds:F0} ms");
        return failed;
    }

    private static byte[] ValidFile(TempFolder dir)
    {
        string path = dir.File("valid.safetensors");
        using var a = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], 2, 3);
        using var b = Tensor.FromArray([7f, 8f], 2);
        Safetensors.Save(path, [("a", a), ("b", b)], new Dictionary<string, string> { ["format"] = "pt" }, DType.BFloat16);
        return File.ReadAllBytes(path);
    }

    private static void OpenAndReadAll(string path)
    {
        using var file = SafetensorsFile.Open(path);
        foreach (var name in file.TensorNames) file.ReadTensor(name).Dispose();
    }

    [Fact]
    public void Corrupted_safetensors_files_fail_cleanly()
    {
        using var dir = new TempFolder();
        var valid = ValidFile(dir);
        string path = dir.File("m.safetensors");
        int headerEnd = 8 + (int)BitConverter.ToUInt64(valid, 0);
        double slowest = 0;
        int cases = 0, rejected = 0;
        void Check(byte[] bytes, string label, bool mustFail = true)
        {
            File.WriteAllBytes(path, bytes);
            bool failed = ExpectLibraryErrorOrSuccess(() => OpenAndReadAll(path), label, ref slowest);
            if (mustFail) Assert.True(failed, $"{label} was accepted");
            cases++;
            if (failed) rejected++;
        }

        for (int cut = 0; cut < valid.Length; cut += 3) Check(valid[..cut], $"truncated at {cut}");
        foreach (ulong n in new[] { ulong.MaxValue, (ulong)long.MaxValue + 1, 100_000_001UL, (ulong)valid.Length, 0UL, 1UL })
        {
            var bytes = (byte[])valid.Clone();
            BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), n);
            Check(bytes, $"header length {n}");
        }
        var random = new Random(1234);
        for (int i = 0; i < 400; i++)
        {
            var bytes = (byte[])valid.Clone();
            int at = random.Next(8, headerEnd);
            bytes[at] ^= (byte)(1 << random.Next(8));
            Check(bytes, $"bit flip at {at} (seed 1234, case {i})", mustFail: false); // some flips keep the file valid
        }

        string Entry(string dtype, string shape, string offsets) => "{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}}";
        var headers = new (string Header, int Data)[]
        {
            (Entry("F32", "[2]", "[0,8]"), 12),                                                         // hole at the end
            (Entry("F32", "[2]", "[4,12]"), 12),                                                        // hole at the start
            (Entry("F32", "[2]", "[0,16]"), 8),                                                         // out of range
            (Entry("F32", "[3]", "[0,8]"), 8),                                                          // shape × size ≠ span
            (Entry("F32", "[2]", "[8,0]"), 8),                                                          // reversed
            (Entry("F32", "[-2]", "[0,8]"), 8),                                                         // negative dimension
            (Entry("F32", "[2]", "[0,-8]"), 8),
            (Entry("Q4", "[2]", "[0,8]"), 8),                                                           // unknown dtype
            (Entry("F32", "[4294967296, 4294967296, 4294967296]", "[0,8]"), 8),                         // overflowing shape
            (Entry("F32", "[2.5]", "[0,8]"), 8),
            (Entry("F32", "\"2\"", "[0,8]"), 8),
            (Entry("F32", "[2]", "[0,8,9]"), 8),
            ("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12), // overlap
            ("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16), // duplicate
            ("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}""", 8),
            ("""{"a":{"dtype":"F32","shape":[2]}}""", 8),
            ("""{"__metadata__":{"k":1}}""", 0),
            ("""{"__metadata__":[]}""", 0),
            ("""{"a":[1,2]}""", 8),
            ("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x""", 8),
            ("[" + new string('[', 100_000), 0),                                                       // deep nesting
            ("{" + string.Concat(Enumerable.Repeat("\"a\":{", 50_000)), 0),
            ("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}""", 8),                          // unterminated
            ("   {}", 0),
        };
        foreach (var (header, data) in headers)
        {
            string padded = dir.File("raw.safetensors");
            SafetensorsTests.WriteRaw(padded, header, new byte[data]);
            Check(File.ReadAllBytes(padded), $"header {header[..Math.Min(80, header.Length)]}");
        }
        var nonUtf8 = (byte[])valid.Clone();
        nonUtf8[10] = 0xC3; // a lead byte followed by '"' is invalid UTF-8
        nonUtf8[11] = 0xFF;
        Check(nonUtf8, "non-UTF-8 header");
        output.WriteLine($"{cases} corrupted safetensors files, {rejected} rejected, slowest {slowest:F1} ms");
    }

    [Fact]
    public void Corrupted_config_json_fails_cleanly()
    {
        using var dir = new TempFolder();
        using var model = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1);
        HuggingFaceLlama.Save(model, dir.Path);
        var valid = File.ReadAllBytes(dir.File("config.json"));
        var random = new Random(99);
        double slowest = 0;
        int rejected = 0;
        for (int i = 0; i < 300; i++)
        {
            var bytes = (byte[])valid.Clone();
            int mutation = i % 3;
            if (mutation == 0) bytes = bytes[..random.Next(bytes.Length)];
            else if (mutation == 1) bytes[random.Next(bytes.Length)] = Replacements[random.Next(Replacements.Length)];
            else bytes[random.Next(bytes.Length)] ^= (byte)(1 << random.Next(8));
            File.WriteAllBytes(dir.File("config.json"), bytes);
            if (ExpectLibraryErrorOrSuccess(() => HuggingFaceLlama.Load(dir.Path).Dispose(), $"config mutation {i} (seed 99)", ref slowest)) rejected++;
        }
        File.WriteAllText(dir.File("config.json"), new string('[', 100_000));
        Assert.True(ExpectLibraryErrorOrSuccess(() => HuggingFaceLlama.Load(dir.Path).Dispose(), "deep config", ref slowest));
        File.WriteAllText(dir.File("config.json"), Encoding.UTF8.GetString(valid).Replace("\"hidden_size\": 32", "\"hidden_size\": 32000"));
        Assert.True(ExpectLibraryErrorOrSuccess(() => HuggingFaceLlama.Load(dir.Path).Dispose(), "config/weights disagree", ref slowest));
        output.WriteLine($"300 config.json mutations: {rejected} rejected, slowest {slowest:F1} ms");
    }

    [Fact]
    public void Corrupted_adapter_folders_fail_cleanly()
    {
        using var dir = new TempFolder();
        using (var peft = PeftModel.Create(new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1), new LoRAConfig { Rank = 2, UseDoRA = true, Targets = TargetModules.List("q_proj", "v_proj") }))
            PeftAdapterFile.Save(peft, dir.Path);
        var config = File.ReadAllBytes(dir.File("adapter_config.json"));
        var weights = File.ReadAllBytes(dir.File("adapter_model.safetensors"));
        var random = new Random(7);
        double slowest = 0;
        int rejected = 0;
        for (int i = 0; i < 300; i++)
        {
            var c = (byte[])config.Clone();
            var w = (byte[])weights.Clone();
            var target = i % 2 == 0 ? c : w;
            int limit = target == w ? 8 + (int)BitConverter.ToUInt64(weights, 0) : target.Length;
            if (i % 5 == 0) target = target[..random.Next(limit)];
            else target[random.Next(limit)] ^= (byte)(1 << random.Next(8));
            File.WriteAllBytes(dir.File("adapter_config.json"), i % 2 == 0 ? target : c);
            File.WriteAllBytes(dir.File("adapter_model.safetensors"), i % 2 == 0 ? w : target);
            if (ExpectLibraryErrorOrSuccess(() =>
                {
                    using var model = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1);
                    PeftAdapterFile.LoadInto(model, dir.Path);
                }, $"adapter mutation {i} (seed 7)", ref slowest)) rejected++;
        }
        output.WriteLine($"300 adapter-folder mutations: {rejected} rejected, slowest {slowest:F1} ms");
    }
}
