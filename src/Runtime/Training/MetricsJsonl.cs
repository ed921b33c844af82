using System.Globalization;

namespace PeftGen.Training;

/// <summary>
/// The training metrics log: one JSON object per optimizer step, appended to <see cref="FileName"/> in the output
/// folder, e.g. <c>{"step":12,"loss":1.93,"lr":0.0002,"grad_norm":0.41,"tokens_per_s":1840.2,"eval_loss":null,"elapsed_s":6.512,"peak_rss_mb":912.4}</c>.
/// Non-finite numbers (a skipped step's loss) are written as <c>null</c>, so every line is valid JSON.
/// </summary>
public static class MetricsJsonl
{
    /// <summary>Name of the metrics file inside an output folder.</summary>
    public const string FileName = "metrics.jsonl";

    /// <summary>The JSON line (without newline) for one step.</summary>
    /// <param name="progress">What the trainer reported after the step.</param>
    /// <returns>A JSON object with step, loss, lr, grad_norm, tokens_per_s, eval_loss, elapsed_s and, where known, peak_rss_mb (the process's peak resident set so far).</returns>
    public static string FormatLine(TrainerProgress progress) => string.Create(CultureInfo.InvariantCulture,
        $"{{\"step\":{progress.Step},\"loss\":{Number(progress.Loss)},\"lr\":{Number(progress.LearningRate)},\"grad_norm\":{Number(progress.GradNorm)},\"tokens_per_s\":{(double.IsFinite(progress.TokensPerSecond) ? progress.TokensPerSecond.ToString("F1", CultureInfo.InvariantCulture) : "null")},\"eval_loss\":{(progress.EvalLoss is float e ? Number(e) : "null")},\"elapsed_s\":{progress.Elapsed.TotalSeconds:F3}{(progress.PeakResidentBytes > 0 ? ",\"peak_rss_mb\":" + (progress.PeakResidentBytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture) : "")}}}");

    /// <summary>Appends the line of one step to <paramref name="path"/> in a single write (the folder is created when missing).</summary>
    /// <param name="path">The metrics file.</param>
    /// <param name="progress">What the trainer reported after the step.</param>
    public static void Append(string path, TrainerProgress progress)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } folder) Directory.CreateDirectory(folder);
        File.AppendAllText(path, FormatLine(progress) + "\n");
    }

    private static string Number(float value) => float.IsFinite(value) ? value.ToString("R", CultureInfo.InvariantCulture) : "null";
}
