using System.Buffers.Binary;
using System.Text;
using PeftGen.IO;
using PeftGen.Models.Llama;

namespace PeftGen.Cli.Tests;

/// <summary>Runs the CLI in-process with captured stdout/stderr, and builds tiny models and datasets for it.</summary>
internal static class CliRunner
{
    /// <summary>Runs <c>peftgen args</c> and returns the exit code and both streams.</summary>
    public static (int Code, string Stdout, string Stderr) Run(params string[] args) => RunWithInput("", args);

    /// <summary>Runs <c>peftgen args</c> with <paramref name="input"/> as standard input (its end is what Ctrl-D gives a terminal).</summary>
    public static (int Code, string Stdout, string Stderr) RunWithInput(string input, params string[] args)
    {
        var (oldIn, oldOut, oldErr) = (Console.In, Console.Out, Console.Error);
        using var stdin = new StringReader(input);
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        Console.SetIn(stdin);
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            int code = CliApp.RunAsync(args).GetAwaiter().GetResult();
            return (code, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetIn(oldIn);
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    /// <summary>A fresh empty folder under the system temp folder, deleted with everything in it on dispose.</summary>
    public static TempDirectory TempFolder(string name) => new(Path.Combine(Path.GetTempPath(), "peftgen-cli-tests", $"{name}-{Guid.NewGuid():N}"));

    /// <summary>Vocabulary of <see cref="WriteTokenizer"/>: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, 256 byte tokens and the 95 printable ASCII characters.</summary>
    public const int TinyVocab = 3 + 256 + 95;

    /// <summary>The config of the tiny test model: 2 layers, hidden 32, GQA 4/2 heads, context 64.</summary>
    public static LlamaConfig TinyConfig => new()
    {
        HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = TinyVocab, MaxPositionEmbeddings = 64, TieWordEmbeddings = true, BosTokenId = 1, EosTokenId = 2,
    };

    /// <summary>Writes a randomly initialised tiny Llama as a Hugging Face folder with a llama2.c tokenizer.bin.</summary>
    public static string TinyModelFolder(string folder, int seed = 1)
    {
        using var model = new LlamaForCausalLM(TinyConfig, seed);
        HuggingFaceLlama.Save(model, folder);
        WriteTokenizer(Path.Combine(folder, "tokenizer.bin"));
        return folder;
    }

    /// <summary>A llama2.c tokenizer file: special tokens, byte fallback, then one token per printable ASCII character.</summary>
    public static void WriteTokenizer(string path)
    {
        var pieces = new List<string> { "<unk>", "<s>", "</s>" };
        for (int b = 0; b < 256; b++) pieces.Add($"<0x{b:X2}>");
        for (char c = ' '; c <= '~'; c++) pieces.Add(c.ToString());
        using var stream = File.Create(path);
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(word, pieces.Max(p => Encoding.UTF8.GetByteCount(p)));
        stream.Write(word);
        foreach (var piece in pieces)
        {
            var bytes = Encoding.UTF8.GetBytes(piece);
            BinaryPrimitives.WriteSingleLittleEndian(word, 0f);
            stream.Write(word);
            BinaryPrimitives.WriteInt32LittleEndian(word, bytes.Length);
            stream.Write(word);
            stream.Write(bytes);
        }
    }

    /// <summary>A small JSONL dataset of plain-text records.</summary>
    public static string TextDataset(string path, int lines = 8)
    {
        var text = new StringBuilder();
        for (int i = 0; i < lines; i++) text.Append($"{{\"text\": \"The robot Zip counts {i} {i + 1} {i + 2}.\"}}\n");
        File.WriteAllText(path, text.ToString());
        return path;
    }
}

/// <summary>A temporary folder that deletes itself; converts to its path so tests use it as a string.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory(string path)
    {
        Path = path;
        Directory.CreateDirectory(path);
    }

    public string Path { get; }

    public static implicit operator string(TempDirectory directory) => directory.Path;

    public override string ToString() => Path;

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A file still mapped by a reader on another thread; the system's temp cleaning takes it later.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
