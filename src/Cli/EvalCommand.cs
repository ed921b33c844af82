using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Text;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>
/// <c>peftgen eval</c>: the mean loss and perplexity of a model (and optionally a PEFT adapter) on a JSONL dataset,
/// scored as training scores it (responses only unless --train-on-prompts).
/// </summary>
/// <remarks>
/// Every row is read once, in file order, in batches of --batch-size; the loss is computed by
/// <see cref="Trainer.EvaluateLoss"/>, the method the trainer's evaluation uses, so it is the number train reports as
/// eval loss for the same rows and batch size: the mean of the batches' losses, each batch's the mean over its scored
/// tokens (the last batch is completed with rows from the start, as the trainer's eval batches are). Perplexity is
/// exp(loss). stdout carries the result only: one line, or one JSON object with --json.
/// </remarks>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var adapter = CommonOptions.Adapter();
        var quant = CommonOptions.InferenceQuant();
        var data = CommonOptions.Data();
        var maxLength = new Option<int>("--max-length") { Description = "most tokens per row (at most the model's context; default 512, or the context when shorter)", DefaultValueFactory = _ => 512 };
        var batchSize = new Option<int>("--batch-size") { Description = "rows per batch", DefaultValueFactory = _ => 4 };
        var chatFormat = new Option<string?>("--chat-format") { Description = $"prompt format of instruction and chat records ({string.Join(", ", ChatFormat.Names)}); default: from the tokenizer's chat template, else alpaca/chatml" };
        var fullLoss = new Option<bool>("--train-on-prompts") { Description = "score prompt tokens too (default: only responses, as train does)" };
        var json = new Option<bool>("--json") { Description = "print one JSON object {\"loss\", \"perplexity\", \"tokens\", \"rows\"}" };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("eval", "Mean loss and perplexity of a model (with or without a PEFT adapter) on a JSONL dataset, scored as training scores it.")
        {
            model, tokenizer, adapter, quant, data, maxLength, batchSize, chatFormat, fullLoss, json, device, threads,
        };
        command.SetAction((parse, cancellationToken) => Task.FromResult(CliErrors.Run(() =>
        {
            // Settings are checked before anything loads, in the options' own names.
            int maxLengthValue = parse.GetValue(maxLength), batchSizeValue = parse.GetValue(batchSize);
            CommonOptions.Require(maxLengthValue >= 1, "--max-length", maxLengthValue, "must be ≥ 1");
            CommonOptions.Require(batchSizeValue >= 1, "--batch-size", batchSizeValue, "must be ≥ 1");
            string dataPath = parse.GetValue(data)!;
            if (!File.Exists(dataPath)) throw new CliError($"--data {dataPath}: no such file (give a JSONL dataset).");
            string? adapterFolder = parse.GetValue(adapter);
            var quantization = CommonOptions.Quantization(parse.GetValue(quant)!);
            if (adapterFolder != null) AdapterFolders.CheckQuantization(AdapterFolders.Detect(adapterFolder), quantization);
            var format = parse.GetValue(chatFormat) is { } name ? ChatFormat.Get(name) : null;
            var target = CommonOptions.Prepare(parse, device, threads);
            string modelPath = parse.GetValue(model)!;
            maxLengthValue = CommonOptions.MaxLength(parse, maxLength, ModelLoader.Inspect(modelPath).Config.MaxPositionEmbeddings);

            using var pretrained = AdapterFolders.LoadForInference(modelPath, parse.GetValue(tokenizer), target, adapterFolder, quantization);
            var llama = pretrained.Model;
            // Prompt learning's virtual tokens take positions of the context too.
            if (llama.Model.VirtualTokens?.Count is > 0 and int virtualTokens)
                maxLengthValue = CommonOptions.MaxLength(parse, maxLength, llama.Config.MaxPositionEmbeddings - virtualTokens, virtualTokens);
            if (pretrained.Tokenizer.VocabSize != llama.Config.VocabSize)
                throw new CliError($"the tokenizer {pretrained.TokenizerPath} has {pretrained.Tokenizer.VocabSize} tokens but the model's vocabulary has {llama.Config.VocabSize}: give the model's tokenizer with --tokenizer.");

            var dataset = JsonlDataset.Load(dataPath, pretrained.Tokenizer, new JsonlDatasetOptions
            {
                MaxSequenceLength = maxLengthValue,
                ChatFormat = format,
                ResponseOnlyLoss = !parse.GetValue(fullLoss),
            });
            var batches = dataset.CreateBatchSource(batchSizeValue, maxLengthValue, seed: 0, pack: false, shuffle: false);
            long tokens = ScoredTokens(batches);
            Console.Error.WriteLine($"data {dataPath}: {dataset.Examples.Count} {dataset.Kind.ToString().ToLowerInvariant()} examples{(dataset.ChatFormat is { } f ? $" ({f.Name} format)" : "")}, {batches.RowCount} rows in {batches.BatchesPerEpoch} batches of {batches.BatchSize}"
                + (dataset.TruncatedExamples > 0 ? $", {dataset.TruncatedExamples} truncated to {maxLengthValue} tokens" : "")
                + (dataset.DroppedExamples > 0 ? $", {dataset.DroppedExamples} dropped (nothing to score)" : ""));
            cancellationToken.ThrowIfCancellationRequested();
            if (tokens == 0)
                throw new CliError($"--data {dataPath}: no token is scored{(parse.GetValue(fullLoss) ? "" : " (the records have no responses; give --train-on-prompts to score prompts too)")}.");

            var clock = Stopwatch.StartNew();
            float loss = Trainer.EvaluateLoss(llama, b => llama.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), batches, batches.BatchesPerEpoch);
            double perplexity = Math.Exp(loss);
            Console.Error.WriteLine($"evaluated in {clock.Elapsed.TotalSeconds:F2} s");
            Console.Out.WriteLine(parse.GetValue(json)
                ? Invariant($"{{\"loss\":{Number(loss)},\"perplexity\":{Number(perplexity)},\"tokens\":{tokens},\"rows\":{batches.RowCount}}}")
                : Invariant($"loss {loss:F4}, perplexity {perplexity:F4} over {tokens} tokens in {batches.RowCount} rows"));
            return 0;
        })));
        return command;
    }

    /// <summary>Scored targets (not -100) over every row once: the last batch's rows completed from the start are not counted again.</summary>
    private static long ScoredTokens(DatasetBatchSource batches)
    {
        long count = 0;
        for (int p = 0; p < batches.BatchesPerEpoch; p++)
        {
            var batch = batches.BatchAt(p);
            int rows = Math.Min(batch.BatchSize, batches.RowCount - p * batches.BatchSize);
            for (int i = 0; i < rows * batch.Length; i++)
                if (batch.Targets[i] != JsonlDataset.IgnoreLabel) count++;
        }
        return count;
    }

    private static string Number(double value) => double.IsFinite(value) ? value.ToString("R", CultureInfo.InvariantCulture) : "null";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
