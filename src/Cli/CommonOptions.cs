using System.CommandLine;
using PeftGen.Backends.Cpu;
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

    /// <summary>--adapter: an adapter folder of any method, applied for inference (generate, chat, eval).</summary>
    public static Option<string?> Adapter() =>
        new("--adapter") { Description = "adapter folder to apply, of any method train writes (the method is read from adapter_config.json's peft_type)" };

    /// <summary>--quant for inference: 4-bit storage while loading, off by default.</summary>
    public static Option<string> InferenceQuant() =>
        Quant("none", "4-bit storage, quantized while loading: with a LoRA or VeRA adapter, of the layers it adapts (nf4/fp4 to match a QLoRA adapter's base); otherwise of every linear layer but the head; none keeps the checkpoint's type");

    /// <summary>--data: the JSONL dataset (train, eval).</summary>
    public static Option<string> Data() =>
        new("--data") { Description = "JSONL dataset: {\"text\": …}, {\"instruction\": …, \"output\": …} or {\"messages\": […]} per line", Required = true };

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
    /// The --max-length to use with a model of <paramref name="context"/> tokens (the positions left beside
    /// <paramref name="virtualTokens"/> virtual tokens): a value the user typed must fit; the default shrinks to it.
    /// </summary>
    public static int MaxLength(ParseResult parse, Option<int> maxLength, int context, int virtualTokens = 0)
    {
        int value = parse.GetValue(maxLength);
        if (parse.GetResult(maxLength) is not { Implicit: false }) return Math.Min(value, context);
        Require(value <= context, "--max-length", value, virtualTokens == 0
            ? $"exceeds the model's context of {context} tokens: give --max-length {context} or less"
            : $"plus the {virtualTokens} virtual tokens exceeds the model's context of {context + virtualTokens} tokens: give --max-length {context} or less");
        return value;
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
