using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftGen.IO;
using PeftGen.Tensors;
using PeftGen.Text;

namespace PeftGen.Benchmarks;

/// <summary>
/// <c>io</c>: the file and text paths a fine-tuning run starts with.
/// <list type="bullet">
/// <item><c>safetensors_open_read</c>: open a 1 GiB safetensors file (64 tensors of [4096, 1024] F32) and read one
/// tensor, against reading the whole file (the peer: what a loader without memory mapping pays). The first figures
/// follow a page-cache drop when the process may (root; <c>cold_cache</c> says whether it happened).</item>
/// <item><c>tokenizer_encode</c>: byte-level BPE encode throughput (MB/s of UTF-8) with a 4,000-merge tokenizer.json
/// learned from the benchmark's own corpus, on a few MB of text; decode(encode(s)) == s is checked.</item>
/// </list>
/// </summary>
internal static class IoBenchmark
{
    public static int Run(string[] args)
    {
        var options = BenchmarkArgs.Parse(args, new() { ["dir"] = Path.GetTempPath(), ["text-mb"] = "4", ["merges"] = "4000" });
        string dir = Path.Combine(options["dir"], "peftgen-io-bench-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        try
        {
            Safetensors1GiB(dir);
            Tokenizer(dir, double.Parse(options["text-mb"], CultureInfo.InvariantCulture), int.Parse(options["merges"], CultureInfo.InvariantCulture));
            return 0;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Safetensors1GiB(string dir)
    {
        const int tensors = 64, rows = 4096, cols = 1024; // 64 × 16 MiB = 1 GiB
        string path = Path.Combine(dir, "model.safetensors");
        using (var block = Tensor.Zeros(rows, cols))
        {
            var span = block.AsSpan();
            for (int i = 0; i < span.Length; i++) span[i] = i % 977 * 1e-3f;
            Console.Error.WriteLine("io: writing a 1 GiB safetensors file…");
            Safetensors.Save(path, Enumerable.Range(0, tensors).Select(i => ($"model.layers.{i}.mlp.up_proj.weight", block)));
        }
        long bytes = new FileInfo(path).Length;
        string probe = "model.layers.37.mlp.up_proj.weight";

        // JIT the reader on a small file first, so the first figures measure the disk, not the compiler.
        string small = Path.Combine(dir, "small.safetensors");
        using (var tiny = Tensor.Zeros(4, 4)) Safetensors.Save(small, [("w", tiny)]);
        OpenAndRead(small, "w");

        bool cold = DropPageCache();
        var (openMs, readMs, checksum) = OpenAndRead(path, probe);
        var (warmOpenMs, warmReadMs, _) = OpenAndRead(path, probe);
        // The peer: a full read of the file, what a loader without memory mapping pays (the page cache holds only what was read so far).
        var watch = Stopwatch.StartNew();
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20))
        {
            var buffer = new byte[1 << 22];
            while (stream.Read(buffer) > 0) { }
        }
        double fullReadMs = watch.Elapsed.TotalMilliseconds;

        Print(new JsonObject
        {
            ["benchmark"] = "safetensors_open_read",
            ["file_bytes"] = bytes,
            ["tensor"] = probe,
            ["tensor_bytes"] = rows * cols * 4,
            ["cold_cache"] = cold,
            ["first_open_ms"] = Round(openMs),
            ["first_read_tensor_ms"] = Round(readMs),
            ["warm_open_ms"] = Round(warmOpenMs),
            ["warm_read_tensor_ms"] = Round(warmReadMs),
            ["peer_full_read_ms"] = Round(fullReadMs),
            ["ratio_full_read_over_first_open_plus_read"] = Round(fullReadMs / (openMs + readMs)),
            ["checksum"] = checksum,
        });
    }

    private static (double OpenMs, double ReadMs, double Checksum) OpenAndRead(string path, string name)
    {
        var watch = Stopwatch.StartNew();
        using var file = SafetensorsFile.Open(path);
        double open = watch.Elapsed.TotalMilliseconds;
        watch.Restart();
        using var tensor = file.ReadTensor(name);
        double read = watch.Elapsed.TotalMilliseconds;
        double sum = 0;
        foreach (float v in tensor.AsSpan()) sum += v;
        return (open, read, Math.Round(sum, 3));
    }

    private static bool DropPageCache()
    {
        try
        {
            using (Process.Start("sync")!) { }
            File.WriteAllText("/proc/sys/vm/drop_caches", "3");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    private static void Tokenizer(string dir, double textMb, int merges)
    {
        var random = new Random(11);
        string[] words = Words(random, 20_000);
        string corpus = Text(random, words, 300_000);
        Console.Error.WriteLine($"io: learning {merges} BPE merges…");
        var learn = Stopwatch.StartNew();
        string path = Path.Combine(dir, "tokenizer.json");
        File.WriteAllText(path, ByteLevelBpe.Learn(corpus, merges).ToJsonString());
        double learnSeconds = learn.Elapsed.TotalSeconds;

        var tokenizer = HuggingFaceTokenizer.Load(path);
        string text = Text(random, words, (int)(textMb * 1_000_000));
        tokenizer.Encode(text[..20_000], addBos: false); // warm-up (JIT, regex)
        var watch = Stopwatch.StartNew();
        int[] ids = tokenizer.Encode(text, addBos: false);
        double encodeSeconds = watch.Elapsed.TotalSeconds;
        watch.Restart();
        string decoded = tokenizer.Decode(ids);
        double decodeSeconds = watch.Elapsed.TotalSeconds;
        if (decoded != text) throw new InvalidOperationException("tokenizer benchmark: decode(encode(text)) differs from the text.");

        double mb = Encoding.UTF8.GetByteCount(text) / 1e6;
        Print(new JsonObject
        {
            ["benchmark"] = "tokenizer_encode",
            ["kind"] = "byte-level BPE (GPT-2 pre-tokenizer)",
            ["vocab"] = tokenizer.VocabSize,
            ["text_mb"] = Round(mb),
            ["tokens"] = ids.Length,
            ["encode_mb_per_s"] = Round(mb / encodeSeconds),
            ["decode_mb_per_s"] = Round(mb / decodeSeconds),
            ["bytes_per_token"] = Round(mb * 1e6 / ids.Length),
            ["learn_merges_s"] = Round(learnSeconds),
        });
    }

    // Pronounceable words with a few accented and non-Latin ones, so merges find real structure and text is not ASCII only.
    private static string[] Words(Random random, int count)
    {
        string[] syllables = ["ta", "ne", "ri", "so", "ku", "la", "mi", "do", "pe", "sha", "tion", "ing", "er", "qu", "é", "ü", "ñ", "ка", "ми"];
        var words = new string[count];
        for (int i = 0; i < count; i++)
        {
            var word = new StringBuilder();
            int n = 1 + random.Next(4);
            for (int s = 0; s < n; s++) word.Append(syllables[(int)(syllables.Length * Math.Pow(random.NextDouble(), 1.8))]);
            words[i] = word.ToString();
        }
        return words;
    }

    // Zipf-like word choice, with punctuation, numbers and line breaks.
    private static string Text(Random random, string[] words, int chars)
    {
        var text = new StringBuilder(chars + 64);
        while (text.Length < chars)
        {
            text.Append(words[(int)(words.Length * Math.Pow(random.NextDouble(), 3))]);
            text.Append(random.Next(20) switch { 0 => ", ", 1 => ".\n", 2 => " 2024 ", _ => " " });
        }
        return text.ToString();
    }

    private static double Round(double value) => Math.Round(value, 3);

    private static void Print(JsonObject result) => Console.WriteLine(result.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
}
