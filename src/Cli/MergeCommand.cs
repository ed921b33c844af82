using System.CommandLine;
using PeftGen.IO;
using PeftGen.Methods.LoRA;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>
/// <c>peftgen merge</c>: fold an adapter into its base model and write the result as a Hugging Face folder
/// (config.json + model.safetensors, plus the tokenizer). The adapter merges into the full-precision base, as PEFT's
/// merge_and_unload on a 16-bit base does: a LoRA adapter streamed tensor by tensor (<see cref="PeftMerge"/>: peak memory
/// about one layer plus the adapter), Delta-LoRA, VeRA, IA3 and sparse deltas on the float32 model loaded whole. Prompt
/// learning and bottleneck adapters are refused: they add what a Llama model folder has no weight for. stdout prints
/// the output folder.
/// </summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model("base model the adapter was trained on: Hugging Face folder or llama2.c checkpoint (.bin)");
        var tokenizer = CommonOptions.Tokenizer();
        var adapter = new Option<string>("--adapter") { Description = "adapter folder: LoRA (also QLoRA, DoRA, LoRA-FA), Delta-LoRA, VeRA, IA3 or a sparse delta (prompt learning and bottleneck adapters add what a model folder cannot hold)", Required = true };
        var output = new Option<string>("--output") { Description = "folder for the merged Hugging Face model", Required = true };
        var dtype = CommonOptions.DType("storage of the merged weights (float32, bfloat16, float16)");
        var command = new Command("merge", "Merge an adapter (LoRA family, Delta-LoRA, VeRA, IA3, sparse) into its base model and save a Hugging Face model folder.")
        {
            model, tokenizer, adapter, output, dtype,
        };
        command.SetAction((parse, cancellationToken) => Task.FromResult(CliErrors.Run(() =>
        {
            string modelPath = parse.GetValue(model)!, outputDir = parse.GetValue(output)!, adapterDir = parse.GetValue(adapter)!;
            string? givenTokenizer = parse.GetValue(tokenizer);
            // No input may be written into or over, however the output is spelled (links included).
            PathIdentity.EnsureOutputSeparate("--output", outputDir,
                [("the base model (--model)", modelPath), ("the adapter (--adapter)", adapterDir), ("the tokenizer (--tokenizer)", givenTokenizer)], WrittenNames);
            var storeAs = CommonOptions.StorageType(parse.GetValue(dtype)!);
            // The tokenizer is checked before anything is written, so a broken one fails the command with nothing half-made.
            int vocabSize = PretrainedModel.ReadCheckedConfig(modelPath).VocabSize;
            string? tokenizerPath = givenTokenizer ?? TryFindTokenizer(modelPath, vocabSize);
            if (tokenizerPath != null) PretrainedModel.LoadTokenizer(tokenizerPath, vocabSize);
            // LoRA streams tensor by tensor; the other methods that change only existing weights merge in memory.
            var kind = AdapterFolders.Detect(adapterDir);
            AdapterFolders.RequireMergeable(kind);
            int layers;
            if (kind.Kind == AdapterKind.LoRA)
                layers = PeftMerge.MergeToFolder(modelPath, adapterDir, outputDir, storeAs, cancellationToken).AdaptedLayers.Count;
            else
            {
                var (merged, changed) = AdapterFolders.MergeInMemory(modelPath, kind, storeAs);
                using (merged)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    HuggingFaceLlama.Save(merged, outputDir, storeAs);
                }
                layers = changed;
            }
            var copied = tokenizerPath != null ? PretrainedModel.CopyTokenizer(tokenizerPath, outputDir) : [];
            Console.Error.WriteLine($"merged the {kind.Description} adapter {adapterDir} ({layers} {(kind.Kind == AdapterKind.Sparse ? "tensors" : "layers")}) into {modelPath}; saved {HuggingFaceLlama.ConfigFileName}, {HuggingFaceLlama.WeightsFileName}{string.Concat(copied.Select(c => ", " + c))} ({parse.GetValue(dtype)})");
            if (tokenizerPath == null) Console.Error.WriteLine("warning: no tokenizer was found beside the base model, so none was copied; pass --tokenizer to include one");
            Console.Out.WriteLine(Path.GetFullPath(outputDir));
            return 0;
        })));
        return command;
    }

    /// <summary>The files merge and convert write into the output folder.</summary>
    internal static readonly IReadOnlyCollection<string> WrittenNames =
        [HuggingFaceLlama.ConfigFileName, HuggingFaceLlama.WeightsFileName, .. PretrainedModel.CompanionFiles];

    /// <summary>The tokenizer beside the model, or null (merging needs none; it is only copied along).</summary>
    internal static string? TryFindTokenizer(string modelPath, int vocabSize)
    {
        try
        {
            return PretrainedModel.FindTokenizer(modelPath, vocabSize);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
    }
}
