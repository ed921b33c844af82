using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// A Llama checkpoint opened to read one float32 tensor at a time, by parameter name and in the model's own q/k order
/// (interleaved for llama2.c): a Hugging Face folder (<see cref="HuggingFaceLlama"/>) or a llama2.c checkpoint
/// (<see cref="Llama2Checkpoint"/>). Opening validates the config and every name, shape and length, as loading does;
/// the weights are read only when asked for, so streaming merge and convert hold one tensor at a time and loading
/// fills a model tensor by tensor.
/// </summary>
internal sealed class LlamaWeightsReader : IDisposable
{
    private readonly Action<string, Tensor> _readInto;
    private readonly IDisposable _source;

    internal LlamaWeightsReader(LlamaConfig config, string sourcePath, Action<string, Tensor> readInto, IDisposable source)
    {
        Config = config;
        SourcePath = sourcePath;
        Shapes = HuggingFaceLlama.ExpectedShapes(config);
        _readInto = readInto;
        _source = source;
    }

    /// <summary>The model's configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The file the weights come from (safetensors file or index, or the llama2.c checkpoint), for messages.</summary>
    public string SourcePath { get; }

    /// <summary>Every parameter's name and shape, in the model's order (see <see cref="HuggingFaceLlama.ExpectedShapes"/>).</summary>
    public IReadOnlyDictionary<string, int[]> Shapes { get; }

    /// <summary>
    /// Opens <paramref name="modelPath"/>: a Hugging Face folder, or a llama2.c checkpoint file. A safetensors or JSON file
    /// of a folder is refused with a message naming the folder to pass instead.
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="modelPath"/>.</exception>
    /// <exception cref="InvalidDataException">The path is a file of a folder, or the files are malformed.</exception>
    public static LlamaWeightsReader Open(string modelPath)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        if (Directory.Exists(modelPath)) return HuggingFaceLlama.Open(modelPath);
        if (!File.Exists(modelPath))
            throw new FileNotFoundException(
                $"Model '{modelPath}' does not exist: pass a Hugging Face model folder (config.json + model.safetensors) or a llama2.c checkpoint (.bin).", modelPath);
        if (modelPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || modelPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"Model '{modelPath}' is a file of a Hugging Face model folder: pass the folder ({Path.GetDirectoryName(Path.GetFullPath(modelPath))}).");
        return Llama2Checkpoint.Open(modelPath);
    }

    /// <summary>Reads parameter <paramref name="name"/> into <paramref name="destination"/> (dense, float32, its shape).</summary>
    public void ReadInto(string name, Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(destination);
        if (!Shapes.TryGetValue(name, out var shape)) throw new KeyNotFoundException($"{SourcePath}: a Llama model has no parameter '{name}'.");
        if (!destination.ShapeArray.AsSpan().SequenceEqual(shape) || destination.DType != DType.Float32 || !destination.IsContiguous)
            throw new ArgumentException($"{SourcePath}: '{name}' is float32 {ShapeUtil.Format(shape)}; {destination} cannot take it.", nameof(destination));
        _readInto(name, destination);
    }

    /// <summary>Reads parameter <paramref name="name"/> into a new float32 tensor; the caller disposes it.</summary>
    public Tensor Read(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!Shapes.TryGetValue(name, out var shape)) throw new KeyNotFoundException($"{SourcePath}: a Llama model has no parameter '{name}'.");
        var tensor = Tensor.Create(shape, DType.Float32, zeroed: false, scoped: false);
        try
        {
            ReadInto(name, tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>Loads every parameter into a new <see cref="LlamaForCausalLM"/>.</summary>
    public LlamaForCausalLM LoadModel()
    {
        var model = new LlamaForCausalLM(Config);
        try
        {
            foreach (var (name, parameter) in model.NamedParameters()) ReadInto(name, parameter);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Closes the files.</summary>
    public void Dispose() => _source.Dispose();
}
