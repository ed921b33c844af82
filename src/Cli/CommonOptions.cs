using System.CommandLine;
using PeftGen.Backends.Cpu;
using PeftGen.Methods.LoRA;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>Options several commands share, built fresh for each command (System.CommandLine options belong to one parent).</summary>
internal static class CommonOptions
{
    public const string ModelHelp = "Hugging Face model folder (config.json + model.safetensors) or llama2.c checkpoint (.bin)";

    public static Option<string> Model(string description = ModelHelp) => new("--model") { Description = description, Required = true };

    public static Option<string?> Tokenizer() => new("--tokenizer")
    {
        Description = "tokenizer.json (or its folder) or llama2.c tokenizer .bin; default: tokenizer.json, tokenizer.bin or tok<vocab>.bin beside the model",
    };

    public static Option<string> Device() => new("--device")
    {
        Description = "where to run: cpu, or cuda / cuda:N (the CUDA backend is included but not yet verified on a GPU, see docs/cuda.md; generate runs on the CPU only); exits with code 4 when the CUDA libraries or a GPU are missing",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<int?> Threads() => new("--threads") { Description = "CPU threads (default: all cores)" };

    public static Option<string> Quant(string defaultValue, string description)
    {
        var option = new Option<string>("--quant") { Description = description, DefaultValueFactory = _ => defaultValue };
        option.AcceptOnlyFromAmong("nf4", "fp4", "none");
        return option;
    }

    public static Option<string> DType(string description)
    {
        var option = new Option<string>("--dtype") { Description = description, DefaultValueFactory = _ => "float32" };
        option.AcceptOnlyFromAmong("float32", "bfloat16", "float16");
        return option;
    }

    /// <summary>Throws <see cref="CliError"/> "<paramref name="option"/> value: rule" unless <paramref name="ok"/>.</summary>
    public static void Require(bool ok, string option, object value, string rule)
    {
        if (!ok) throw new CliError($"{option} {Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)}: {rule}.");
    }

    /// <summary>Applies --threads and checks --device (through <see cref="ComputeDevice.Resolve"/>: a CUDA device must have its libraries, driver and device).</summary>
    public static Tensors.Device Prepare(ParseResult parse, Option<string> device, Option<int?> threads)
    {
        if (parse.GetValue(threads) is int n)
        {
            Require(n >= 1, "--threads", n, "must be ≥ 1");
            CpuParallel.MaxThreads = n;
        }
        return ComputeDevice.Resolve(parse.GetValue(device)!);
    }

    /// <summary>
    /// The --max-length to use with a model of <paramref name="context"/> tokens: a value the user typed must fit the
    /// context; the default shrinks to it.
    /// </summary>
    public static int MaxLength(ParseResult parse, Option<int> maxLength, int context)
    {
        int value = parse.GetValue(maxLength);
        if (parse.GetResult(maxLength) is not { Implicit: false }) return Math.Min(value, context);
        Require(value <= context, "--max-length", value, $"exceeds the model's context of {context} tokens: give --max-length {context} or less");
        return value;
    }

    /// <summary>
    /// Loads a model for inference (generate, eval), with the PEFT LoRA adapter in <paramref name="adapterFolder"/> when
    /// given: the layers that will be 4-bit are quantized while they are read and the other weights stay in the
    /// checkpoint's 16-bit type, so the float32 model is never built. Reports what was loaded on stderr.
    /// </summary>
    public static PretrainedModel LoadForInference(string modelPath, string? tokenizerPath, Tensors.Device target,
        string? adapterFolder, QuantizationConfig? quantization)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var loadOptions = adapterFolder != null
            ? PeftModel.LoadOptions(PeftAdapterFile.ReadConfig(Path.Combine(adapterFolder, PeftAdapterFile.ConfigFileName)), quantization)
            : new IO.ModelLoadOptions { Quantization = quantization, FrozenWeights = IO.FrozenWeightStorage.AsStored };
        var pretrained = PretrainedModel.Load(modelPath, tokenizerPath, target, loadOptions);
        try
        {
            var model = pretrained.Model;
            Console.Error.WriteLine($"loaded {Path.GetFileName(Path.TrimEndingDirectorySeparator(modelPath))}: {model.CountParameters().Total:N0} parameters, {model.Config.NumHiddenLayers} layers, in {clock.ElapsedMilliseconds} ms");
            if (adapterFolder == null) return pretrained;
            var peft = PeftAdapterFile.LoadInto(model, adapterFolder, quantization);
            var config = peft.GetConfig("default");
            Console.Error.WriteLine($"adapter {adapterFolder}: r={config.Rank} alpha={config.Alpha} on {peft.Plan().Count} layers ({config.Targets})");
            return pretrained;
        }
        catch
        {
            pretrained.Dispose();
            throw;
        }
    }

    /// <summary>The QLoRA storage of --quant (null for none), with the block size and double quantization given.</summary>
    public static QuantizationConfig? Quantization(string quant, int blockSize = 64, bool doubleQuant = true) => quant switch
    {
        "nf4" => new QuantizationConfig(QuantType.NF4, doubleQuant, blockSize),
        "fp4" => new QuantizationConfig(QuantType.FP4, doubleQuant, blockSize),
        _ => null,
    };

    public static DType StorageType(string dtype) => dtype switch
    {
        "bfloat16" => Tensors.DType.BFloat16,
        "float16" => Tensors.DType.Float16,
        _ => Tensors.DType.Float32,
    };
}
