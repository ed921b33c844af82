using System.Globalization;
using System.Text;

namespace PeftGen.Training;

/// <summary>
/// A console progress bar for <see cref="Trainer"/>: step, loss, learning rate, tokens/s, elapsed time and ETA.
/// On a terminal (<c>interactive</c>) it redraws one line with a carriage return; when the output is redirected
/// to a file or a pipe it prints a plain line at the first step, every tenth of the run and the last step, so logs
/// stay readable. It reports synchronously on the training thread, unlike <see cref="Progress{T}"/>.
/// </summary>
public sealed class TrainingProgressBar : IProgress<TrainerProgress>
{
    private readonly TextWriter _writer;
    private readonly bool _interactive;
    private readonly string _prefix;
    private int _firstStep = -1;
    private int _lastLength;
    private double _tokensPerSecond;

    /// <summary>Creates a progress bar.</summary>
    /// <param name="writer">Where to draw (the CLI uses stderr, so stdout carries only results).</param>
    /// <param name="interactive">
    /// True to redraw a single line (a terminal); false for one line per tenth of the run (redirected output). Pass
    /// <c>!Console.IsErrorRedirected</c> (or <c>IsOutputRedirected</c>) for the console.
    /// </param>
    /// <param name="prefix">Text drawn before the bar, such as two spaces of indentation.</param>
    public TrainingProgressBar(TextWriter writer, bool interactive, string prefix = "")
    {
        _writer = writer ?? throw new ArgumentNullException(nameof(writer));
        _interactive = interactive;
        _prefix = prefix ?? "";
    }

    /// <summary>Width of the bar in characters.</summary>
    public int BarWidth { get; init; } = 24;

    /// <inheritdoc />
    public void Report(TrainerProgress value)
    {
        if (_firstStep < 0) _firstStep = value.Step;
        _tokensPerSecond = value.Step == _firstStep || !double.IsFinite(_tokensPerSecond)
            ? value.TokensPerSecond
            : 0.8 * _tokensPerSecond + 0.2 * value.TokensPerSecond;
        bool last = value.Step >= value.MaxSteps;
        int every = Math.Max(1, value.MaxSteps / 10);
        if (!_interactive && !(value.Step == _firstStep || last || value.Step % every == 0 || value.EvalLoss.HasValue)) return;

        string line = _prefix + Format(value, Eta(value), _tokensPerSecond, BarWidth);
        if (_interactive)
        {
            _writer.Write('\r' + line.PadRight(_lastLength));
            _lastLength = line.Length;
            if (last) _writer.WriteLine();
        }
        else _writer.WriteLine(line);
        _writer.Flush();
    }

    /// <summary>
    /// One progress line, e.g. <c>[██████░░░░] 60/100  loss 1.2345  lr 2.0e-04  1,234 tok/s  0:12 elapsed  ETA 0:08</c>.
    /// </summary>
    /// <param name="p">The step's report.</param>
    /// <param name="eta">Estimated time left, or null when unknown.</param>
    /// <param name="tokensPerSecond">Throughput to show (the bar shows a moving average).</param>
    /// <param name="barWidth">Characters of the bar.</param>
    /// <returns>The line, without newline.</returns>
    public static string Format(TrainerProgress p, TimeSpan? eta, double tokensPerSecond, int barWidth = 24)
    {
        double fraction = p.MaxSteps > 0 ? Math.Clamp((double)p.Step / p.MaxSteps, 0, 1) : 1;
        int filled = (int)Math.Round(fraction * barWidth);
        var line = new StringBuilder();
        line.Append('[').Append('█', filled).Append('░', barWidth - filled).Append("] ");
        int digits = p.MaxSteps.ToString(CultureInfo.InvariantCulture).Length;
        line.Append(p.Step.ToString(CultureInfo.InvariantCulture).PadLeft(digits)).Append('/').Append(p.MaxSteps.ToString(CultureInfo.InvariantCulture));
        line.Append(float.IsFinite(p.Loss) ? string.Create(CultureInfo.InvariantCulture, $"  loss {p.Loss:F4}") : "  loss  (skipped)");
        if (p.EvalLoss is float e) line.Append(string.Create(CultureInfo.InvariantCulture, $"  eval {e:F4}"));
        line.Append(string.Create(CultureInfo.InvariantCulture, $"  lr {p.LearningRate:0.0e+00}"));
        if (double.IsFinite(tokensPerSecond)) line.Append(string.Create(CultureInfo.InvariantCulture, $"  {tokensPerSecond:N0} tok/s"));
        line.Append("  ").Append(Clock(p.Elapsed)).Append(" elapsed");
        if (eta is TimeSpan left) line.Append("  ETA ").Append(Clock(left));
        return line.ToString();
    }

    private TimeSpan? Eta(TrainerProgress p)
    {
        // Elapsed counts from the first step of this run (a resumed run starts past step 1).
        int done = p.Step - _firstStep + 1;
        if (done < 1 || p.Elapsed <= TimeSpan.Zero) return null;
        return TimeSpan.FromTicks(p.Elapsed.Ticks / done * Math.Max(0, p.MaxSteps - p.Step));
    }

    private static string Clock(TimeSpan t) => t.TotalHours >= 1
        ? string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}")
        : string.Create(CultureInfo.InvariantCulture, $"{t.Minutes}:{t.Seconds:00}");
}
