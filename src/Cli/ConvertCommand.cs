using System.CommandLine;
using PeftGen.IO;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>
/// <c>peftgen convert</c>: turn a llama2.c checkpoint into a Hugging Face model folder (q/k rows permuted for
/// rotate-half RoPE), with its tokenizer copied in as tokenizer.bin, so train/generate/merge can take the folder. The
/// checkpoint is streamed tensor by tensor (peak memory about one tensor).
/// </summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model("llama2.c checkpoint (.bin)");
        var tokenizer = CommonOptions.Tokenizer();
        var output = new Option<string>("--output") { Description = "folder for the Hugging Face model", Required = true };
        var dtype = CommonOptions.DType("storage of the weights (float32, bfloat16, float16)");
        var command = new Command("convert", "Convert a llama2.c checkpoint into a Hugging Face model folder.") { model, tokenizer, output, dtype };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string modelPath = parse.GetValue(model)!, outputDir = parse.GetValue(output)!;
            if (Directory.Exists(modelPath)) throw new ArgumentException($"--model {modelPath} is a folder: convert takes a llama2.c checkpoint file (.bin).");
            string? givenTokenizer = parse.GetValue(tokenizer);
            PathIdentity.EnsureOutputSeparate("--output", outputDir, [("the checkpoint (--model)", modelPath), ("the tokenizer (--tokenizer)", givenTokenizer)], MergeCommand.WrittenNames);
            var storeAs = CommonOptions.StorageType(parse.GetValue(dtype)!);
            // The tokenizer is checked before anything is written, so a truncated one fails the command with nothing half-made.
            int vocabSize = Llama2Checkpoint.ReadConfig(modelPath).VocabSize;
            string? tokenizerPath = givenTokenizer ?? MergeCommand.TryFindTokenizer(modelPath, vocabSize);
            if (tokenizerPath != null) PretrainedModel.LoadTokenizer(tokenizerPath, vocabSize);
            var config = HuggingFaceLlama.ConvertLlama2C(modelPath, outputDir, storeAs);
            var copied = tokenizerPath != null ? PretrainedModel.CopyTokenizer(tokenizerPath, outputDir) : [];
            long parameters = HuggingFaceLlama.ExpectedShapes(config).Values.Sum(shape => shape.Aggregate(1L, (n, d) => n * d));
            Console.Error.WriteLine($"converted {modelPath} ({parameters:N0} parameters){(copied.Count > 0 ? $" and {tokenizerPath} (as {copied[0]})" : "")}");
            if (tokenizerPath == null) Console.Error.WriteLine("warning: no tokenizer was found beside the checkpoint, so none was copied; pass --tokenizer to include one");
            Console.Out.WriteLine(Path.GetFullPath(outputDir));
            return 0;
        }));
        return command;
    }
}
