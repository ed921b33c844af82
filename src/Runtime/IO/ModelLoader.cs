using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>How frozen weights are kept in memory when a model is loaded.</summary>
public enum FrozenWeightStorage
{
    /// <summary>Every weight in float32, trainable or not (a model to fully fine-tune, merge or export).</summary>
    Float32,

    /// <summary>
    /// Linear and embedding weights stay in the checkpoint's type: bfloat16 or float16 checkpoints keep half the memory of
    /// float32, and the kernels widen them as they multiply. Such weights are frozen (only float32 tensors train); norms
    /// stay float32. A float32 checkpoint stays float32. What LoRA and QLoRA training and inference use.
    /// </summary>
    AsStored,
}

/// <summary>How <see cref="ModelLoader"/> stores a model's weights.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>
    /// 4-bit storage (QLoRA) for the linear layers <see cref="QuantizeLayer"/> selects, quantized while they are read: their
    /// full-precision weight never exists beyond one chunk of scratch. Null: no 4-bit layers.
    /// </summary>
    public QuantizationConfig? Quantization { get; init; }

    /// <summary>
    /// Which linear layers (by module path, e.g. <c>model.layers.0.self_attn.q_proj</c>) are stored in 4 bits when
    /// <see cref="Quantization"/> is set; null selects every linear layer but the output head (PEFT's "all-linear").
    /// </summary>
    public Func<string, bool>? QuantizeLayer { get; init; }

    /// <summary>How the other weights are kept (default: float32).</summary>
    public FrozenWeightStorage FrozenWeights { get; init; } = FrozenWeightStorage.Float32;
}

/// <summary>
/// Loads Llama-family models from Hugging Face folders and llama2.c checkpoints without ever building more than the
/// model it returns: the model is built with empty weights (accelerate's <c>init_empty_weights</c>), then each weight is
/// read from the file, one tensor at a time, straight into the storage it keeps: 4-bit codes for the layers QLoRA
/// adapts (quantized chunk by chunk as they are read), the checkpoint's 16-bit type for frozen weights, float32 for the
/// rest. Reads go through the file rather than a memory map, so the checkpoint's pages do not stay in the resident set.
/// Peak memory is the final model plus one chunk of scratch.
/// </summary>
public static class ModelLoader
{
    /// <summary>Loads a Hugging Face model folder or a llama2.c checkpoint (<c>.bin</c>) as a <see cref="LlamaForCausalLM"/>.</summary>
    /// <param name="modelPath">The folder or checkpoint file.</param>
    /// <param name="options">How to store the weights; null: float32 everywhere.</param>
    /// <returns>The model (float32 weights are trainable; 16-bit and 4-bit ones are frozen).</returns>
    /// <exception cref="FileNotFoundException">Nothing is at <paramref name="modelPath"/>, or the folder lacks its config or weights.</exception>
    /// <exception cref="InvalidDataException">The files are malformed, disagree with the configuration, or hold a non-finite weight in a 4-bit layer (the message names the file and tensor).</exception>
    public static LlamaForCausalLM Load(string modelPath, ModelLoadOptions? options = null) =>
        Load(modelPath, config => new LlamaForCausalLM(config), options);

    /// <summary>
    /// Loads a checkpoint into a model built by <paramref name="create"/> (for example a model class declared with the
    /// DSL, whose generated <c>FromPretrained</c> method calls this). <paramref name="create"/> runs with empty weights:
    /// it must only construct the model.
    /// </summary>
    /// <typeparam name="TModel">The model type.</typeparam>
    /// <param name="modelPath">A Hugging Face folder or a llama2.c checkpoint.</param>
    /// <param name="create">Builds the model for the checkpoint's configuration.</param>
    /// <param name="options">How to store the weights; null: float32 everywhere.</param>
    /// <returns>The loaded model.</returns>
    /// <exception cref="InvalidDataException">A parameter of the model is not in the checkpoint, or has another shape.</exception>
    public static TModel Load<TModel>(string modelPath, Func<LlamaConfig, TModel> create, ModelLoadOptions? options = null)
        where TModel : LlamaForCausalLM
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        ArgumentNullException.ThrowIfNull(create);
        options ??= new ModelLoadOptions();
        using var reader = CheckpointReader.Open(modelPath);
        TModel model;
        using (EmptyWeights.Scope()) model = create(reader.Config);
        try
        {
            CheckParameters(model, reader);
            if (options.Quantization is { } quantization)
                QuantizeLayers(model, reader, quantization, options.QuantizeLayer ?? (path => !LlamaForCausalLM.IsOutputHead(path)));
            foreach (var (path, module) in model.NamedModules())
                foreach (var (name, parameter) in module.OwnParameters())
                    if (parameter.IsEmpty) ReadParameter(reader, Module.Join(path, name), parameter, StorageOf(module, name, reader, Module.Join(path, name), options));
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The configuration of a checkpoint and the type its weights are stored in, read from its headers only (milliseconds,
    /// whatever the model's size): what memory predictions need before loading.
    /// </summary>
    /// <param name="modelPath">A Hugging Face folder or a llama2.c checkpoint.</param>
    /// <returns>The configuration, and the stored type of the first decoder layer's query projection.</returns>
    /// <exception cref="InvalidDataException">The files are malformed or disagree with the configuration.</exception>
    public static (LlamaConfig Config, DType WeightType) Inspect(string modelPath)
    {
        using var reader = CheckpointReader.Open(modelPath);
        return (reader.Config, reader.StoredType("model.layers.0.self_attn.q_proj.weight"));
    }

    /// <summary>Every parameter of the model must be in the checkpoint with the same shape (a model class may add its own).</summary>
    private static void CheckParameters(Module model, CheckpointReader reader)
    {
        var problems = new List<string>();
        foreach (var (name, parameter) in model.NamedParameters())
        {
            if (!reader.Contains(name)) problems.Add($"'{name}' {ShapeUtil.Format(parameter.ShapeArray)} is missing");
            else if (!reader.ShapeOf(name).AsSpan().SequenceEqual(parameter.Shape))
                problems.Add($"'{name}' is {ShapeUtil.Format(reader.ShapeOf(name))} in the file, the model has {ShapeUtil.Format(parameter.ShapeArray)}");
        }
        if (problems.Count > 0)
            throw new InvalidDataException($"{reader.Source} does not fit {model.GetType().Name}: {string.Join("; ", problems)}.");
    }

    /// <summary>Replaces each selected linear layer by a <see cref="Linear4Bit"/> quantized chunk by chunk from the file.</summary>
    private static void QuantizeLayers(Module model, CheckpointReader reader, QuantizationConfig quantization, Func<string, bool> select)
    {
        var layers = model.NamedModules().Where(m => m.Module is Linear && select(m.Path)).ToList();
        foreach (var (path, module) in layers)
        {
            var linear = (Linear)module;
            string name = Module.Join(path, "weight");
            QuantizedWeight weight;
            try
            {
                weight = QuantizedWeight.Quantize(linear.OutFeatures, linear.InFeatures, quantization.Type, quantization.BlockSize,
                    quantization.DoubleQuant, (first, destination) => reader.Read(name, first, destination));
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{reader.Source}: tensor '{name}' cannot be stored in 4 bits: {e.Message}", e);
            }
            if (linear.Bias is { } bias) ReadParameter(reader, Module.Join(path, "bias"), bias, DType.Float32);
            model.ReplaceModule(path, new Linear4Bit(weight, linear.Bias)).Dispose();
        }
    }

    /// <summary>The type a parameter is kept in: its file's 16-bit type for linear and embedding weights under <see cref="FrozenWeightStorage.AsStored"/>, else float32.</summary>
    private static DType StorageOf(Module module, string name, CheckpointReader reader, string path, ModelLoadOptions options)
    {
        if (options.FrozenWeights != FrozenWeightStorage.AsStored || name != "weight" || module is not (Linear or Embedding)) return DType.Float32;
        return reader.StoredType(path);
    }

    /// <summary>Gives <paramref name="parameter"/> its memory in <paramref name="dtype"/> and reads it from the file.</summary>
    private static void ReadParameter(CheckpointReader reader, string name, Tensor parameter, DType dtype)
    {
        var bytes = parameter.Materialize(dtype);
        if (dtype == reader.StoredType(name)) reader.ReadStored(name, bytes);
        else if (dtype == DType.Float32) reader.Read(name, 0, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes));
        else throw new InvalidOperationException($"{reader.Source}: '{name}' is stored as {reader.StoredType(name)}; it can be kept as float32 or as stored, not as {dtype}.");
    }
}
