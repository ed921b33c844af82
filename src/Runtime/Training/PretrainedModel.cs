using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Text;

namespace PeftGen.Training;

/// <summary>
/// A base model and its tokenizer, loaded from a Hugging Face model folder (<c>config.json</c> + safetensors) or a
/// llama2.c checkpoint (<c>.bin</c>). The tokenizer is the one given, else found beside the model:
/// <c>tokenizer.json</c> (Hugging Face), then <c>tokenizer.bin</c> or <c>tok&lt;vocab&gt;.bin</c> (llama2.c).
/// </summary>
public sealed class PretrainedModel : IDisposable
{
    /// <summary>File name of a llama2.c tokenizer stored in a model folder (as <c>peftgen convert</c> and <c>merge</c> write it).</summary>
    public const string Llama2TokenizerFileName = "tokenizer.bin";

    /// <summary>File name of a Hugging Face tokenizer.</summary>
    public const string HuggingFaceTokenizerFileName = "tokenizer.json";

    /// <summary>Files copied with a model folder when it is rewritten (merge, convert): tokenizer and generation settings.</summary>
    public static IReadOnlyList<string> CompanionFiles { get; } =
        [HuggingFaceTokenizerFileName, "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "generation_config.json", Llama2TokenizerFileName];

    private PretrainedModel(LlamaForCausalLM model, ITokenizer tokenizer, string modelPath, string tokenizerPath)
    {
        Model = model;
        Tokenizer = tokenizer;
        ModelPath = modelPath;
        TokenizerPath = tokenizerPath;
    }

    /// <summary>The model (on the CPU; weights stored as the load options asked).</summary>
    public LlamaForCausalLM Model { get; }

    /// <summary>The tokenizer.</summary>
    public ITokenizer Tokenizer { get; }

    /// <summary>Where the model was loaded from.</summary>
    public string ModelPath { get; }

    /// <summary>Where the tokenizer was loaded from.</summary>
    public string TokenizerPath { get; }

    /// <summary>True when <see cref="ModelPath"/> is a Hugging Face folder (false: a llama2.c checkpoint).</summary>
    public bool IsHuggingFaceFolder => Directory.Exists(ModelPath);

    /// <summary>Loads a model and its tokenizer for <paramref name="device"/> (checked by <see cref="ComputeDevice.Require"/>).</summary>
    /// <param name="modelPath">A Hugging Face model folder or a llama2.c checkpoint file.</param>
    /// <param name="tokenizerPath">A <c>tokenizer.json</c> (or its folder) or a llama2.c tokenizer; null to look beside the model.</param>
    /// <param name="device">Where the model will run; null for the CPU.</param>
    /// <param name="options">How to store the weights (4-bit layers, 16-bit frozen weights); null: float32.</param>
    /// <returns>The model and tokenizer.</returns>
    /// <exception cref="FileNotFoundException">The model or tokenizer does not exist (the message names the path and what was looked for).</exception>
    /// <exception cref="InvalidDataException">A file is malformed (the message names it).</exception>
    public static PretrainedModel Load(string modelPath, string? tokenizerPath = null, Device? device = null, ModelLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        ComputeDevice.Require(device ?? Device.Cpu);
        var model = ModelLoader.Load(modelPath, options);
        try
        {
            string tokenizerFile = tokenizerPath ?? FindTokenizer(modelPath, model.Config.VocabSize);
            return new PretrainedModel(model, LoadTokenizer(tokenizerFile, model.Config.VocabSize), modelPath, tokenizerFile);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Loads a model from a Hugging Face folder or a llama2.c checkpoint.</summary>
    /// <param name="modelPath">The folder or file.</param>
    /// <returns>The model.</returns>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="modelPath"/>.</exception>
    /// <exception cref="InvalidDataException">The path is a safetensors file rather than its folder, or the files are malformed.</exception>
    internal static LlamaForCausalLM LoadModel(string modelPath)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        return ModelLoader.Load(modelPath);
    }

    /// <summary>
    /// The configuration of a model folder or llama2.c checkpoint, checked against its weights as loading checks it (sizes
    /// against the files' lengths and tensor counts, then every tensor name and shape) without reading any weight.
    /// </summary>
    /// <exception cref="InvalidDataException">The config and the weights disagree; the message names the file and field.</exception>
    public static LlamaConfig ReadCheckedConfig(string modelPath)
    {
        using var reader = CheckpointReader.Open(modelPath);
        return reader.Config;
    }

    /// <summary>Loads a tokenizer: Hugging Face for a folder or a <c>.json</c> file, llama2.c otherwise.</summary>
    /// <param name="path">The tokenizer file or folder.</param>
    /// <param name="vocabSize">The model's vocabulary size (tokens read from a llama2.c tokenizer).</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    public static ITokenizer LoadTokenizer(string path, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            if (Directory.Exists(path) || path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return HuggingFaceTokenizer.Load(path);
            if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer '{path}' does not exist.", path);
            return Llama2Tokenizer.Load(path, vocabSize);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"Tokenizer '{path}' is truncated ({e.Message}): use a complete copy of the tokenizer.", e);
        }
    }

    /// <summary>The tokenizer file that belongs to a model: in its folder, or beside its checkpoint file.</summary>
    /// <param name="modelPath">A model folder or checkpoint file.</param>
    /// <param name="vocabSize">The model's vocabulary size (llama2.c names custom tokenizers <c>tok&lt;vocab&gt;.bin</c>).</param>
    /// <returns>The tokenizer path.</returns>
    /// <exception cref="FileNotFoundException">No tokenizer is there; the message lists the names looked for.</exception>
    public static string FindTokenizer(string modelPath, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        string folder = Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        string[] names = [HuggingFaceTokenizerFileName, Llama2TokenizerFileName, $"tok{vocabSize}.bin"];
        foreach (var name in names)
            if (File.Exists(Path.Combine(folder, name))) return Path.Combine(folder, name);
        throw new FileNotFoundException(
            $"No tokenizer for model '{modelPath}': looked for {string.Join(", ", names)} in {folder}. Pass the tokenizer explicitly (--tokenizer).",
            Path.Combine(folder, HuggingFaceTokenizerFileName));
    }

    /// <summary>
    /// Copies a tokenizer into a model folder being written (by merge or convert), so the folder is complete: a llama2.c
    /// tokenizer becomes <c>tokenizer.bin</c>; for a Hugging Face tokenizer, <c>tokenizer.json</c> and whichever of
    /// <see cref="CompanionFiles"/> sit beside it are copied. Each file is replaced atomically.
    /// </summary>
    /// <param name="tokenizerPath">The tokenizer file (or Hugging Face folder).</param>
    /// <param name="folder">The model folder being written.</param>
    /// <returns>The names of the files copied.</returns>
    public static IReadOnlyList<string> CopyTokenizer(string tokenizerPath, string folder) => CopyTokenizer(tokenizerPath, folder, null);

    /// <summary>
    /// As <see cref="CopyTokenizer(string, string)"/>, but first loads the tokenizer (with <paramref name="vocabSize"/>, the
    /// model's vocabulary) so that a truncated or malformed one is refused instead of copied.
    /// </summary>
    /// <exception cref="InvalidDataException">The tokenizer does not load; nothing is copied.</exception>
    public static IReadOnlyList<string> CopyTokenizer(string tokenizerPath, string folder, int? vocabSize)
    {
        ArgumentNullException.ThrowIfNull(tokenizerPath);
        ArgumentNullException.ThrowIfNull(folder);
        if (vocabSize is int vocab) LoadTokenizer(tokenizerPath, vocab);
        Directory.CreateDirectory(folder);
        var copied = new List<string>();
        bool huggingFace = Directory.Exists(tokenizerPath) || tokenizerPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase);
        if (!huggingFace)
        {
            Copy(tokenizerPath, Llama2TokenizerFileName);
            return copied;
        }
        string source = Directory.Exists(tokenizerPath) ? tokenizerPath : Path.GetDirectoryName(Path.GetFullPath(tokenizerPath))!;
        Copy(Directory.Exists(tokenizerPath) ? Path.Combine(source, HuggingFaceTokenizerFileName) : tokenizerPath, HuggingFaceTokenizerFileName);
        foreach (var name in CompanionFiles.Where(n => n is not (HuggingFaceTokenizerFileName or Llama2TokenizerFileName)))
            if (File.Exists(Path.Combine(source, name))) Copy(Path.Combine(source, name), name);
        return copied;

        void Copy(string from, string name)
        {
            if (!File.Exists(from)) throw new FileNotFoundException($"Tokenizer file '{from}' does not exist.", from);
            string to = Path.Combine(folder, name);
            copied.Add(name);
            if (Path.GetFullPath(from) == Path.GetFullPath(to)) return;
            string temp = AtomicFile.TempPathFor(to);
            try
            {
                File.Copy(from, temp);
                // The copy is the user's file: it must not inherit a read-only mode from the source (e.g. a shared model folder).
                if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(temp, File.GetUnixFileMode(temp) | UnixFileMode.UserWrite);
                else File.SetAttributes(temp, File.GetAttributes(temp) & ~FileAttributes.ReadOnly);
                File.Move(temp, to, overwrite: true);
            }
            catch
            {
                AtomicFile.TryDelete(temp);
                throw;
            }
        }
    }

    /// <summary>Disposes the model.</summary>
    public void Dispose() => Model.Dispose();
}
