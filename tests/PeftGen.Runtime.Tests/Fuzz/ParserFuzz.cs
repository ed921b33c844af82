// Shared by the test project (tests/PeftGen.Runtime.Tests/Fuzz) and the benchmark project (`benchmarks -- robustness`),
// which links this file: it must use only the runtime library and the BCL (no xunit, no FsCheck).
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Text;
using PeftGen.Training;

namespace PeftGen.Fuzz;

/// <summary>What one mutation does to a seed file. Positions and values are taken modulo what the file allows.</summary>
public enum MutationKind
{
    /// <summary>Overwrite one byte with <see cref="Mutation.Value"/>.</summary>
    SetByte,
    /// <summary>Flip bit <c>Value % 8</c> of one byte.</summary>
    FlipBit,
    /// <summary>Insert 1–8 copies of the byte <c>Value &amp; 0xFF</c>.</summary>
    Insert,
    /// <summary>Delete 1–16 bytes.</summary>
    Delete,
    /// <summary>Cut the file at the position.</summary>
    Truncate,
    /// <summary>Text: replace a number with a huge/negative/NaN/1e309/… value. Binary: write an extreme int32 at a 4-aligned offset.</summary>
    ReplaceNumber,
    /// <summary>Text: insert a duplicate of a JSON key (with another value) before it. Binary: duplicate a run of bytes.</summary>
    DuplicateKey,
}

/// <summary>One mutation of the seed file number <see cref="File"/> (modulo the target's file count).</summary>
public readonly record struct Mutation(MutationKind Kind, int File, int Position, int Value)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Kind}(file {File}, at {Position}, value {Value})";
}

/// <summary>A seed file of a target: its name inside the input folder, its valid bytes, and whether it is text (JSON).</summary>
public sealed record SeedFile(string Name, byte[] Bytes, bool IsText);

/// <summary>A parser under test: valid seed files and the real entry point, called with the folder holding the (mutated) files.</summary>
public sealed record ParserTarget(string Name, IReadOnlyList<SeedFile> Files, Action<string> Parse);

/// <summary>How one mutated input ended.</summary>
public enum FuzzResult { Accepted, Rejected, Crashed, Hang, OverAllocation }

/// <summary>The outcome of one input, with what the failure report needs.</summary>
public sealed record FuzzOutcome(FuzzResult Result, Exception? Exception, long AllocatedBytes, long AllocationBound, TimeSpan Elapsed)
{
    /// <summary>True for a clean rejection or an accepted input.</summary>
    public bool Ok => Result is FuzzResult.Accepted or FuzzResult.Rejected;
}

/// <summary>Counts over the inputs of one target.</summary>
public sealed class FuzzStats(string parser)
{
    public string Parser { get; } = parser;
    public int Tried { get; private set; }
    public int Rejected { get; private set; }
    public int Accepted { get; private set; }
    public int Crashed { get; private set; }
    public int Hangs { get; private set; }
    public int OverAllocation { get; private set; }
    public long MaxAllocBytes { get; private set; }
    public List<string> Failures { get; } = [];

    /// <summary>Failed inputs (crash, hang, allocation beyond the bound).</summary>
    public int Failed => Crashed + Hangs + OverAllocation;

    public void Add(FuzzOutcome outcome, string description)
    {
        Tried++;
        MaxAllocBytes = Math.Max(MaxAllocBytes, outcome.AllocatedBytes);
        switch (outcome.Result)
        {
            case FuzzResult.Accepted: Accepted++; break;
            case FuzzResult.Rejected: Rejected++; break;
            case FuzzResult.Crashed: Crashed++; break;
            case FuzzResult.Hang: Hangs++; break;
            case FuzzResult.OverAllocation: OverAllocation++; break;
        }
        if (!outcome.Ok && Failures.Count < 10) Failures.Add(description);
    }

    public string Summary => $"parser {Parser}: tried {Tried} mutated inputs, {Rejected} rejected cleanly, {Accepted} accepted, " +
        $"{Crashed} crashed, {Hangs} hung, {OverAllocation} over the allocation bound (max {MaxAllocBytes / 1024} KiB)";
}

/// <summary>
/// Mutates valid seed files of every parser that takes user files, runs the real entry point on each mutated input with
/// a time limit and an allocation bound, and classifies the outcome: accepted, rejected with a documented "bad input"
/// exception, or a failure (any other exception, a hang, or allocation beyond <c>64 × input size + 16 MiB</c>).
/// </summary>
public static class ParserFuzz
{
    /// <summary>How long one parse may take before it counts as a hang.</summary>
    public static TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The allocation bound of an input of <paramref name="inputBytes"/> bytes.</summary>
    public static long AllocationBound(long inputBytes) => 64 * inputBytes + (16L << 20);

    /// <summary>Values that replace a number in a text file.</summary>
    public static readonly string[] NumberReplacements =
    [
        "1e309", "-1e309", "NaN", "-1", "0", "-0", "2147483648", "-2147483649", "4294967296", "9223372036854775808",
        "99999999999999999999999999", "1.5", "1e-400", "\"7\"", "null", "true", "[]", "{}", "-2147483648", "65536",
    ];

    /// <summary>Values that a duplicated key gets.</summary>
    public static readonly string[] DuplicateValues = ["0", "null", "\"x\"", "[]", "{}", "1e309", "-1", "true"];

    private static readonly int[] Int32Extremes = [int.MaxValue, int.MinValue, -1, 0, 1 << 24, 0x7FC00000, 0x7F800000, 1 << 30, 3];

    private static readonly Regex NumberPattern = new(@"-?\d+(\.\d+)?([eE][+-]?\d+)?", RegexOptions.CultureInvariant);
    private static readonly Regex KeyPattern = new("\"([^\"\\\\]{1,64})\"\\s*:", RegexOptions.CultureInvariant);

    /// <summary>Is <paramref name="e"/> one of the documented "bad input" exceptions of the file parsers?</summary>
    public static bool IsCleanRejection(Exception e) =>
        e is InvalidDataException or SafetensorsFormatException or FileNotFoundException;

    /// <summary>Applies <paramref name="mutations"/> to the seed files; returns the bytes of every file.</summary>
    public static byte[][] Apply(ParserTarget target, IReadOnlyList<Mutation> mutations)
    {
        var files = target.Files.Select(f => (byte[])f.Bytes.Clone()).ToArray();
        foreach (var m in mutations)
        {
            int index = (int)((uint)m.File % (uint)files.Length);
            files[index] = Apply(files[index], target.Files[index].IsText, m);
        }
        return files;
    }

    /// <summary>Applies one mutation to <paramref name="data"/>.</summary>
    public static byte[] Apply(byte[] data, bool isText, Mutation m)
    {
        int len = data.Length;
        int pos = m.Position & int.MaxValue;
        int value = m.Value & int.MaxValue;
        switch (m.Kind)
        {
            case MutationKind.SetByte when len > 0:
                data[pos % len] = (byte)value;
                return data;
            case MutationKind.FlipBit when len > 0:
                data[pos % len] ^= (byte)(1 << (value % 8));
                return data;
            case MutationKind.Insert:
            {
                int at = pos % (len + 1), count = (value >> 8) % 8 + 1;
                return [.. data.AsSpan(0, at), .. Enumerable.Repeat((byte)value, count), .. data.AsSpan(at)];
            }
            case MutationKind.Delete when len > 0:
            {
                int at = pos % len, count = Math.Min(value % 16 + 1, len - at);
                return [.. data.AsSpan(0, at), .. data.AsSpan(at + count)];
            }
            case MutationKind.Truncate:
                return data[..(pos % (len + 1))];
            case MutationKind.ReplaceNumber when isText:
            {
                string text = Encoding.UTF8.GetString(data);
                var matches = NumberPattern.Matches(text);
                if (matches.Count == 0) return data;
                var match = matches[pos % matches.Count];
                string replacement = NumberReplacements[value % NumberReplacements.Length];
                return Encoding.UTF8.GetBytes(text[..match.Index] + replacement + text[(match.Index + match.Length)..]);
            }
            case MutationKind.ReplaceNumber when len >= 4:
            {
                int at = pos % (len / 4) * 4;
                BitConverter.TryWriteBytes(data.AsSpan(at, 4), Int32Extremes[value % Int32Extremes.Length]);
                return data;
            }
            case MutationKind.DuplicateKey when isText:
            {
                string text = Encoding.UTF8.GetString(data);
                var matches = KeyPattern.Matches(text);
                if (matches.Count == 0) return data;
                var match = matches[pos % matches.Count];
                string duplicate = $"{match.Value} {DuplicateValues[value % DuplicateValues.Length]}, ";
                return Encoding.UTF8.GetBytes(text[..match.Index] + duplicate + text[match.Index..]);
            }
            case MutationKind.DuplicateKey when len > 0:
            {
                int at = pos % len, count = Math.Min(value % 64 + 1, len - at);
                return [.. data.AsSpan(0, at + count), .. data.AsSpan(at, count), .. data.AsSpan(at + count)];
            }
            default:
                return data;
        }
    }

    /// <summary>A random list of 1–4 mutations (the benchmark's generator; the tests use FsCheck's).</summary>
    public static Mutation[] RandomMutations(Random random)
    {
        var result = new Mutation[random.Next(1, 5)];
        for (int i = 0; i < result.Length; i++)
            result[i] = new Mutation((MutationKind)random.Next(7), random.Next(4), random.Next(), random.Next());
        return result;
    }

    /// <summary>Writes the mutated files into a new folder under <paramref name="workDir"/>, parses them, and classifies the outcome.</summary>
    /// <param name="target">The parser and its seeds.</param>
    /// <param name="mutations">Applied in order.</param>
    /// <param name="workDir">Where the input folder is made.</param>
    /// <param name="timeout">The hang limit; null for <see cref="Timeout"/>.</param>
    public static FuzzOutcome RunOne(ParserTarget target, IReadOnlyList<Mutation> mutations, string workDir, TimeSpan? timeout = null)
    {
        var files = Apply(target, mutations);
        string dir = Path.Combine(workDir, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        long total = 0;
        for (int i = 0; i < files.Length; i++)
        {
            File.WriteAllBytes(Path.Combine(dir, target.Files[i].Name), files[i]);
            total += files[i].Length;
        }
        long bound = AllocationBound(total);
        var watch = Stopwatch.StartNew();
        var task = Task.Factory.StartNew(() =>
        {
            // A fresh thread: the GC counter and the tensor-memory counter are per thread.
            long gc0 = GC.GetAllocatedBytesForCurrentThread();
            long live0 = HostMemoryStats.Live;
            HostMemoryStats.ResetPeak();
            Exception? error = null;
            try
            {
                target.Parse(dir);
            }
            catch (Exception e)
            {
                error = e;
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - gc0 + Math.Max(0, HostMemoryStats.Peak - live0);
            return (error, allocated);
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        if (!task.Wait(timeout ?? Timeout))
        {
            // The parse keeps running on its own thread; its folder is left behind.
            return new FuzzOutcome(FuzzResult.Hang, null, 0, bound, watch.Elapsed);
        }
        watch.Stop();
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
            // A file still mapped: the work folder is deleted at the end.
        }
        var (exception, bytes) = task.Result;
        var result = exception is null ? FuzzResult.Accepted
            : IsCleanRejection(exception) ? FuzzResult.Rejected
            : FuzzResult.Crashed;
        if (result != FuzzResult.Crashed && bytes > bound) result = FuzzResult.OverAllocation;
        return new FuzzOutcome(result, exception, bytes, bound, watch.Elapsed);
    }

    /// <summary>A one-paragraph description of a failed input, for test output and the benchmark's log.</summary>
    public static string Describe(ParserTarget target, IReadOnlyList<Mutation> mutations, FuzzOutcome outcome)
    {
        var text = new StringBuilder($"parser {target.Name}: {outcome.Result} after {outcome.Elapsed.TotalMilliseconds:F0} ms; mutations: ");
        text.Append(string.Join("; ", mutations.Select(m => $"{m} on {target.Files[(int)((uint)m.File % (uint)target.Files.Count)].Name}")));
        if (outcome.Result == FuzzResult.OverAllocation)
            text.Append($"; allocated {outcome.AllocatedBytes} bytes > bound {outcome.AllocationBound}");
        if (outcome.Exception is { } e) text.Append($"; {e.GetType().FullName}: {e.Message}\n{e.StackTrace}");
        return text.ToString();
    }

    // ---- seeds and entry points ------------------------------------------------------------------------------

    /// <summary>The tiny Llama of the model-shaped seeds.</summary>
    public static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1,
        VocabSize = 12, MaxPositionEmbeddings = 8, TieWordEmbeddings = false,
    };

    /// <summary>Names of the targets, in the order <see cref="Targets"/> builds them (the stories260K ones only when present).</summary>
    public static readonly string[] TargetNames =
    [
        "safetensors", "config.json", "adapter_config.json", "adapter_folder", "tokenizer.json", "tokenizer.bin",
        "llama2c", "jsonl", "trainer_checkpoint", "tok512.bin", "stories260K.bin",
    ];

    /// <summary>Builds the target named <paramref name="name"/>, writing its seeds under <paramref name="seedDir"/>; null when its files are absent.</summary>
    public static ParserTarget? Target(string name, string seedDir, string? stories260KDir = null)
    {
        Directory.CreateDirectory(seedDir);
        return name switch
        {
            "safetensors" => Safetensors(seedDir),
            "config.json" => new ParserTarget(name, [new SeedFile("config.json", Encoding.UTF8.GetBytes(Tiny.ToJson()), true)],
                dir => LlamaConfig.Load(Path.Combine(dir, "config.json"))),
            "adapter_config.json" => new ParserTarget(name, [AdapterSeeds(seedDir)[0]],
                dir => PeftAdapterFile.ReadConfig(Path.Combine(dir, "adapter_config.json"))),
            "adapter_folder" => new ParserTarget(name, AdapterSeeds(seedDir), dir =>
            {
                using var model = new LlamaForCausalLM(Tiny, seed: 1);
                using var peft = PeftAdapterFile.LoadInto(model, dir);
            }),
            "tokenizer.json" => new ParserTarget(name, [new SeedFile("tokenizer.json", Encoding.UTF8.GetBytes(ByteLevelTokenizerJson()), true)], dir =>
            {
                var tokenizer = HuggingFaceTokenizer.Load(Path.Combine(dir, "tokenizer.json"));
                int[] ids;
                try
                {
                    ids = tokenizer.Encode("hello world 34 lower", addBos: true, addEos: true);
                }
                catch (InvalidOperationException e) when (e.Message.Contains("has no token", StringComparison.Ordinal))
                {
                    return; // documented: a loadable vocabulary that cannot spell a character of the text
                }
                tokenizer.Decode(ids);
            }),
            "tokenizer.bin" => new ParserTarget(name, [new SeedFile("tokenizer.bin", Llama2TokenizerBytes(), false)], dir =>
            {
                EncodeDecode(Llama2Tokenizer.Load(Path.Combine(dir, "tokenizer.bin")), "hello world");
            }),
            "llama2c" => new ParserTarget(name, [new SeedFile("model.bin", Llama2CBytes(), false)],
                dir => Llama2Checkpoint.Load(Path.Combine(dir, "model.bin")).Dispose()),
            "jsonl" => Jsonl(),
            "trainer_checkpoint" => TrainerCheckpoint(seedDir),
            "tok512.bin" => stories260KDir is null ? null : new ParserTarget(name,
                [new SeedFile("tok512.bin", File.ReadAllBytes(Path.Combine(stories260KDir, "tok512.bin")), false)], dir =>
                {
                    EncodeDecode(Llama2Tokenizer.Load(Path.Combine(dir, "tok512.bin"), 512), "Once upon a time");
                }),
            "stories260K.bin" => stories260KDir is null ? null : new ParserTarget(name,
                [new SeedFile("stories260K.bin", File.ReadAllBytes(Path.Combine(stories260KDir, "stories260K.bin")), false)],
                dir => Llama2Checkpoint.Load(Path.Combine(dir, "stories260K.bin")).Dispose()),
            _ => throw new ArgumentException($"unknown parser '{name}'", nameof(name)),
        };
    }

    /// <summary>
    /// Encodes and decodes a short text with a loaded llama2.c tokenizer. Encode documents InvalidOperationException for
    /// a vocabulary without byte-fallback pieces (which a corrupted but well-formed file can be): that one is not a crash.
    /// </summary>
    private static void EncodeDecode(Llama2Tokenizer tokenizer, string text)
    {
        int[] ids;
        try
        {
            ids = tokenizer.Encode(text, addBos: true, addEos: true);
        }
        catch (InvalidOperationException e) when (e.Message.Contains("byte-fallback", StringComparison.Ordinal))
        {
            return;
        }
        tokenizer.Decode(ids);
    }

    private static ParserTarget Safetensors(string seedDir)
    {
        string path = Path.Combine(seedDir, "seed.safetensors");
        using (var a = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], 2, 3))
        using (var b = Tensor.FromArray([7f, 8f], 2))
            PeftGen.IO.Safetensors.Save(path, [("a", a), ("b.weight", b)], new Dictionary<string, string> { ["format"] = "pt" }, DType.BFloat16);
        return new ParserTarget("safetensors", [new SeedFile("m.safetensors", File.ReadAllBytes(path), false)], dir =>
        {
            using var file = SafetensorsFile.Open(Path.Combine(dir, "m.safetensors"));
            foreach (var name in file.TensorNames) file.ReadTensor(name).Dispose();
        });
    }

    private static SeedFile[] AdapterSeeds(string seedDir)
    {
        string dir = Path.Combine(seedDir, "adapter");
        using (var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1),
                   new LoRAConfig { Rank = 2, UseDoRA = true, Targets = TargetModules.List("q_proj", "v_proj") }))
            PeftAdapterFile.Save(peft, dir);
        return
        [
            new SeedFile("adapter_config.json", File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")), true),
            new SeedFile("adapter_model.safetensors", File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors")), false),
        ];
    }

    /// <summary>GPT-2's byte-to-character map of byte-level BPE.</summary>
    private static char ByteChar(int b)
    {
        int n = 0;
        for (int i = 0; i < 256; i++)
        {
            bool printable = i is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255;
            if (i == b) return printable ? (char)i : (char)(256 + n);
            if (!printable) n++;
        }
        throw new ArgumentOutOfRangeException(nameof(b));
    }

    /// <summary>A small byte-level BPE tokenizer.json (ids 0..255 are bytes, then merges, then added tokens).</summary>
    public static string ByteLevelTokenizerJson()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteChar(b).ToString()] = b;
        string g = ByteChar(' ').ToString();
        (string, string)[] merges = [(g, "t"), ("h", "e"), (g + "t", "he"), ("l", "o"), ("lo", "w"), ("e", "r"), ("3", "4")];
        var mergeArray = new JsonArray();
        int next = 256;
        foreach (var (a, b) in merges)
        {
            vocab[a + b] = next++;
            mergeArray.Add(next % 2 == 0 ? JsonValue.Create($"{a} {b}") : new JsonArray(a, b));
        }
        JsonObject Added(int id, string content) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(Added(next, "<|endoftext|>"), Added(next + 1, "<|im_start|>")),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = vocab, ["merges"] = mergeArray,
            },
        };
        return root.ToJsonString(new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
    }

    /// <summary>A small llama2.c tokenizer: &lt;unk&gt;, BOS, EOS, 256 byte pieces, the space and a few merges.</summary>
    public static byte[] Llama2TokenizerBytes()
    {
        var tokens = new List<(string, float)> { ("<unk>", 0), ("\n<s>\n", 0), ("\n</s>\n", 0) };
        for (int b = 0; b < 256; b++) tokens.Add(($"<0x{b:X2}>", 0));
        tokens.AddRange([(" ", -100), ("h", -1), ("e", -2), ("l", -3), ("o", -4), ("he", -5), ("ll", -6), ("llo", -7), ("hello", -8), (" w", -9), ("or", -10)]);
        var bytes = new List<byte>(BitConverter.GetBytes(16));
        foreach (var (piece, score) in tokens)
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(piece);
            bytes.AddRange(BitConverter.GetBytes(score));
            bytes.AddRange(BitConverter.GetBytes(utf8.Length));
            bytes.AddRange(utf8);
        }
        return [.. bytes];
    }

    /// <summary>A llama2.c checkpoint of <see cref="Tiny"/> (untied classifier, so the header's vocabulary size is negative).</summary>
    public static byte[] Llama2CBytes()
    {
        var c = Tiny with { RopeInterleaved = true };
        using var model = new LlamaForCausalLM(c, seed: 3);
        var parameters = model.StateDict();
        using var stream = new MemoryStream();
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
        return stream.ToArray();

        void Write(string name) => stream.Write(MemoryMarshal.AsBytes(parameters[name].AsSpan()));
    }

    private static ParserTarget Jsonl()
    {
        string tokDir = Path.Combine(Path.GetTempPath(), $"peftgen-fuzz-tok-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tokDir);
        string tokPath = Path.Combine(tokDir, "tokenizer.bin");
        File.WriteAllBytes(tokPath, Llama2TokenizerBytes());
        var tokenizer = Llama2Tokenizer.Load(tokPath);
        Directory.Delete(tokDir, recursive: true);
        string lines = string.Join("\n",
            "{\"text\": \"hello world 12\", \"id\": 1}",
            "{\"text\": \"hello hello\", \"id\": 2, \"score\": 0.5}",
            "",
            "{\"text\": \"world or hello 3\", \"id\": 3}",
            "{\"text\": \"lo he ll\", \"id\": 4, \"tags\": [1, 2, 3]}") + "\n";
        return new ParserTarget("jsonl", [new SeedFile("train.jsonl", Encoding.UTF8.GetBytes(lines), true)],
            dir => JsonlDataset.Load(Path.Combine(dir, "train.jsonl"), tokenizer, new JsonlDatasetOptions { MaxSequenceLength = 16 }));
    }

    private static ParserTarget TrainerCheckpoint(string seedDir)
    {
        string checkpoint = Path.Combine(seedDir, "checkpoint-1");
        using (var built = BuildTrainer())
        {
            built.Trainer.Train();
            built.Trainer.SaveCheckpoint(checkpoint);
        }
        var names = Directory.GetFiles(checkpoint).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal);
        var files = names.Select(n => new SeedFile(n, File.ReadAllBytes(Path.Combine(checkpoint, n)), n.EndsWith(".json", StringComparison.Ordinal))).ToArray();
        return new ParserTarget("trainer_checkpoint", files, dir =>
        {
            using var built = BuildTrainer();
            built.Trainer.LoadCheckpoint(dir);
        });
    }

    private sealed class BuiltTrainer(PeftModel<LlamaForCausalLM> peft, Trainer trainer) : IDisposable
    {
        public Trainer Trainer => trainer;

        public void Dispose()
        {
            trainer.Dispose();
            peft.Dispose();
        }
    }

    private static BuiltTrainer BuildTrainer()
    {
        var config = Tiny with { TieWordEmbeddings = true };
        var peft = PeftModel.Create(new LlamaForCausalLM(config, seed: 3),
            new LoRAConfig { Rank = 2, Alpha = 4, Dropout = 0.1f, Targets = TargetModules.AllLinear, Seed = 5 });
        var trainer = new Trainer(peft.Model, b => peft.Model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
            BatchSource.FromFunction(DigitBatch), new TrainerOptions { MaxSteps = 1, LearningRate = 1e-2f }, null, [peft.DropoutRng]);
        return new BuiltTrainer(peft, trainer);
    }

    private static Batch DigitBatch(long position)
    {
        const int batch = 2, length = 6;
        var inputs = new int[batch * length];
        var targets = new int[batch * length];
        for (int i = 0; i < inputs.Length; i++)
        {
            inputs[i] = (int)((position + i) % 10);
            targets[i] = (int)((position + i + 1) % 10);
        }
        return new Batch(inputs, targets, batch, length);
    }

    /// <summary>Runs <paramref name="inputs"/> random inputs per target (the benchmark's loop).</summary>
    public static FuzzStats RunRandom(ParserTarget target, int inputs, int seed, string workDir, Action<string>? onFailure = null)
    {
        var stats = new FuzzStats(target.Name);
        var random = new Random(seed);
        for (int i = 0; i < inputs; i++)
        {
            var mutations = RandomMutations(random);
            var outcome = RunOne(target, mutations, workDir);
            string description = outcome.Ok ? "" : Describe(target, mutations, outcome);
            stats.Add(outcome, description);
            if (!outcome.Ok) onFailure?.Invoke(description);
        }
        return stats;
    }
}
