using System.Globalization;
using System.Security;
using System.Text;
using PeftGen.IO;

namespace PeftGen.Training;

/// <summary>
/// Draws a training run's loss curve as a self-contained SVG (no scripts, fonts or dependencies): the raw loss of
/// every step as a thin line, a smoothed line over it (debiased exponential moving average, as TensorBoard draws),
/// evaluation losses as points, and axes with "nice" ticks (1, 2 or 5 × 10^k). Skipped steps (NaN) leave a gap in the
/// raw line and are carried over by the smoothed one.
/// </summary>
public static class LossCurveSvg
{
    /// <summary>Name of the loss-curve file inside an output folder.</summary>
    public const string FileName = "loss.svg";

    private const int Width = 720, Height = 420;
    private const double Left = 64, Right = 20, Top = 44, Bottom = 52;
    private const string RawColor = "#9ecae1", SmoothColor = "#08519c", EvalColor = "#e6550d";

    /// <summary>Renders the SVG document.</summary>
    /// <param name="losses">Training loss per step, step 1 first (NaN for a skipped step).</param>
    /// <param name="evalLosses">(step, loss) of each evaluation; null or empty for none.</param>
    /// <param name="title">Heading drawn above the plot.</param>
    /// <param name="smoothing">
    /// The moving average's weight of the past, in [0, 1); null picks 1 − 10/steps (clamped to [0, 0.98]), so the
    /// smoothed line spans about a tenth of the run.
    /// </param>
    /// <returns>The SVG text.</returns>
    /// <exception cref="ArgumentException"><paramref name="losses"/> is empty or <paramref name="smoothing"/> is outside [0, 1).</exception>
    public static string Render(IReadOnlyList<float> losses, IReadOnlyList<(int Step, float Loss)>? evalLosses = null,
        string title = "Training loss", double? smoothing = null)
    {
        ArgumentNullException.ThrowIfNull(losses);
        ArgumentNullException.ThrowIfNull(title);
        if (losses.Count == 0) throw new ArgumentException("The loss curve needs at least one step.", nameof(losses));
        double beta = smoothing ?? Math.Clamp(1 - 10.0 / losses.Count, 0, 0.98);
        if (!(beta >= 0 && beta < 1)) throw new ArgumentException($"Smoothing must be in [0, 1) (got {beta}).", nameof(smoothing));
        evalLosses ??= [];

        var finite = losses.Where(float.IsFinite).Concat(evalLosses.Select(e => e.Loss).Where(float.IsFinite)).ToList();
        var (yMin, yMax) = finite.Count > 0 ? (finite.Min(), finite.Max()) : (0.0, 1.0);
        if (yMax - yMin < 1e-9) (yMin, yMax) = (yMin - Math.Max(0.5, Math.Abs(yMin) * 0.1), yMax + Math.Max(0.5, Math.Abs(yMax) * 0.1));
        var yTicks = NiceTicks(yMin, yMax, 6);
        (yMin, yMax) = (Math.Min(yMin, yTicks[0]), Math.Max(yMax, yTicks[^1]));
        int steps = Math.Max(losses.Count, evalLosses.Count > 0 ? evalLosses.Max(e => e.Step) : 0);
        double xMin = 1, xMax = Math.Max(2, steps);
        var xTicks = NiceTicks(xMin, xMax, 8).Where(t => t >= xMin && t <= xMax && t == Math.Round(t)).ToList();
        if (xTicks.Count == 0 || xTicks[0] > xMin) xTicks.Insert(0, xMin);

        double plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double X(double step) => Left + (step - xMin) / (xMax - xMin) * plotW;
        double Y(double loss) => Top + (yMax - loss) / (yMax - yMin) * plotH;

        var svg = new StringBuilder();
        svg.Append(Invariant($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" font-family=\"sans-serif\" font-size=\"12\">\n"));
        svg.Append(Invariant($"  <rect width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>\n"));
        svg.Append(Invariant($"  <text x=\"{Width / 2}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{SecurityElement.Escape(title)}</text>\n"));

        // Grid, ticks and tick labels.
        svg.Append("  <g stroke=\"#e5e5e5\" stroke-width=\"1\">\n");
        foreach (double t in yTicks) svg.Append(Invariant($"    <line x1=\"{Left:F1}\" y1=\"{Y(t):F1}\" x2=\"{Left + plotW:F1}\" y2=\"{Y(t):F1}\"/>\n"));
        foreach (double t in xTicks) svg.Append(Invariant($"    <line x1=\"{X(t):F1}\" y1=\"{Top:F1}\" x2=\"{X(t):F1}\" y2=\"{Top + plotH:F1}\"/>\n"));
        svg.Append("  </g>\n");
        svg.Append(Invariant($"  <g stroke=\"#333\" stroke-width=\"1\" fill=\"none\">\n    <line x1=\"{Left:F1}\" y1=\"{Top:F1}\" x2=\"{Left:F1}\" y2=\"{Top + plotH:F1}\"/>\n    <line x1=\"{Left:F1}\" y1=\"{Top + plotH:F1}\" x2=\"{Left + plotW:F1}\" y2=\"{Top + plotH:F1}\"/>\n"));
        foreach (double t in yTicks) svg.Append(Invariant($"    <line x1=\"{Left - 5:F1}\" y1=\"{Y(t):F1}\" x2=\"{Left:F1}\" y2=\"{Y(t):F1}\"/>\n"));
        foreach (double t in xTicks) svg.Append(Invariant($"    <line x1=\"{X(t):F1}\" y1=\"{Top + plotH:F1}\" x2=\"{X(t):F1}\" y2=\"{Top + plotH + 5:F1}\"/>\n"));
        svg.Append("  </g>\n  <g fill=\"#333\">\n");
        foreach (double t in yTicks) svg.Append(Invariant($"    <text x=\"{Left - 8:F1}\" y=\"{Y(t) + 4:F1}\" text-anchor=\"end\">{TickLabel(t, yTicks)}</text>\n"));
        foreach (double t in xTicks) svg.Append(Invariant($"    <text x=\"{X(t):F1}\" y=\"{Top + plotH + 19:F1}\" text-anchor=\"middle\">{t:0}</text>\n"));
        svg.Append(Invariant($"    <text x=\"{Left + plotW / 2:F1}\" y=\"{Height - 10}\" text-anchor=\"middle\">step</text>\n"));
        svg.Append(Invariant($"    <text x=\"16\" y=\"{Top + plotH / 2:F1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {Top + plotH / 2:F1})\">loss</text>\n"));
        svg.Append("  </g>\n");

        // Raw loss: one polyline per run of finite values.
        var segment = new List<(double X, double Y)>();
        void FlushRaw()
        {
            if (segment.Count == 1) svg.Append(Invariant($"  <circle cx=\"{segment[0].X:F1}\" cy=\"{segment[0].Y:F1}\" r=\"1.5\" fill=\"{RawColor}\"/>\n"));
            else if (segment.Count > 1) svg.Append(Invariant($"  <polyline class=\"raw\" fill=\"none\" stroke=\"{RawColor}\" stroke-width=\"1\" points=\"{Points(segment)}\"/>\n"));
            segment.Clear();
        }
        for (int i = 0; i < losses.Count; i++)
        {
            if (float.IsFinite(losses[i])) segment.Add((X(i + 1), Y(losses[i])));
            else FlushRaw();
        }
        FlushRaw();

        // Smoothed loss: debiased EMA over the finite values.
        var smooth = new List<(double X, double Y)>();
        double ema = 0, weight = 0;
        for (int i = 0; i < losses.Count; i++)
        {
            if (float.IsFinite(losses[i]))
            {
                ema = beta * ema + (1 - beta) * losses[i];
                weight = beta * weight + (1 - beta);
            }
            if (weight > 0) smooth.Add((X(i + 1), Y(ema / weight)));
        }
        if (smooth.Count > 1) svg.Append(Invariant($"  <polyline class=\"smoothed\" fill=\"none\" stroke=\"{SmoothColor}\" stroke-width=\"2\" points=\"{Points(smooth)}\"/>\n"));

        var evals = evalLosses.Where(e => float.IsFinite(e.Loss)).OrderBy(e => e.Step).ToList();
        if (evals.Count > 1)
            svg.Append(Invariant($"  <polyline fill=\"none\" stroke=\"{EvalColor}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\" points=\"{Points(evals.Select(e => (X(e.Step), Y(e.Loss))))}\"/>\n"));
        foreach (var e in evals) svg.Append(Invariant($"  <circle class=\"eval\" cx=\"{X(e.Step):F1}\" cy=\"{Y(e.Loss):F1}\" r=\"3.5\" fill=\"{EvalColor}\"/>\n"));
        if (finite.Count == 0)
            svg.Append(Invariant($"  <text x=\"{Left + plotW / 2:F1}\" y=\"{Top + plotH / 2:F1}\" text-anchor=\"middle\" fill=\"#b00\">no finite loss to draw</text>\n"));

        // Legend.
        double lx = Left + plotW - 150, ly = Top + 8;
        svg.Append(Invariant($"  <g font-size=\"11\">\n    <rect x=\"{lx - 8:F1}\" y=\"{ly - 4:F1}\" width=\"150\" height=\"{(evals.Count > 0 ? 56 : 40)}\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n"));
        svg.Append(Invariant($"    <line x1=\"{lx:F1}\" y1=\"{ly + 8:F1}\" x2=\"{lx + 22:F1}\" y2=\"{ly + 8:F1}\" stroke=\"{RawColor}\" stroke-width=\"1\"/><text x=\"{lx + 28:F1}\" y=\"{ly + 12:F1}\">loss per step</text>\n"));
        svg.Append(Invariant($"    <line x1=\"{lx:F1}\" y1=\"{ly + 24:F1}\" x2=\"{lx + 22:F1}\" y2=\"{ly + 24:F1}\" stroke=\"{SmoothColor}\" stroke-width=\"2\"/><text x=\"{lx + 28:F1}\" y=\"{ly + 28:F1}\">smoothed (EMA {beta:0.###})</text>\n"));
        if (evals.Count > 0)
            svg.Append(Invariant($"    <circle cx=\"{lx + 11:F1}\" cy=\"{ly + 40:F1}\" r=\"3.5\" fill=\"{EvalColor}\"/><text x=\"{lx + 28:F1}\" y=\"{ly + 44:F1}\">eval loss</text>\n"));
        svg.Append("  </g>\n</svg>\n");
        return svg.ToString();
    }

    /// <summary>Renders the SVG and writes it to <paramref name="path"/> atomically (the folder is created when missing).</summary>
    /// <param name="path">The file to write, conventionally <c>&lt;output&gt;/loss.svg</c>.</param>
    /// <param name="losses">Training loss per step, step 1 first.</param>
    /// <param name="evalLosses">(step, loss) of each evaluation; null for none.</param>
    /// <param name="title">Heading drawn above the plot.</param>
    public static void Write(string path, IReadOnlyList<float> losses, IReadOnlyList<(int Step, float Loss)>? evalLosses = null,
        string title = "Training loss")
    {
        ArgumentNullException.ThrowIfNull(path);
        string svg = Render(losses, evalLosses, title);
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } folder) Directory.CreateDirectory(folder);
        AtomicFile.WriteAllBytes(path, Encoding.UTF8.GetBytes(svg));
    }

    /// <summary>Round tick values covering [min, max]: a step of 1, 2 or 5 × 10^k giving at most about <paramref name="count"/> ticks.</summary>
    internal static double[] NiceTicks(double min, double max, int count)
    {
        double span = max - min;
        double raw = span / Math.Max(1, count - 1);
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = (raw / magnitude) switch
        {
            <= 1 => 1,
            <= 2 => 2,
            <= 5 => 5,
            _ => 10,
        } * magnitude;
        double first = Math.Floor(min / step) * step, last = Math.Ceiling(max / step) * step;
        int n = (int)Math.Round((last - first) / step) + 1;
        return Enumerable.Range(0, n).Select(i => Math.Round(first + i * step, 12)).ToArray();
    }

    private static string TickLabel(double value, double[] ticks)
    {
        double step = ticks.Length > 1 ? ticks[1] - ticks[0] : 1;
        int decimals = Math.Clamp((int)Math.Ceiling(-Math.Log10(step) - 1e-9), 0, 6);
        return value.ToString("F" + decimals, CultureInfo.InvariantCulture);
    }

    private static string Points(IEnumerable<(double X, double Y)> points) =>
        string.Join(' ', points.Select(p => Invariant($"{p.X:F1},{p.Y:F1}")));

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
