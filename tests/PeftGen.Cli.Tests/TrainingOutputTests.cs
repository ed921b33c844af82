using System.Xml.Linq;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>The loss-curve SVG, the metrics line and the progress bar.</summary>
public class TrainingOutputTests
{
    [Fact]
    public void Loss_curve_draws_raw_and_smoothed_lines_with_gaps_for_skipped_steps()
    {
        float[] losses = [3f, 2.5f, float.NaN, 2f, 1.5f, 1.2f];
        var svg = XDocument.Parse(LossCurveSvg.Render(losses, [(3, 2.2f), (6, 1.4f)], "run <1> & co"));
        var elements = svg.Descendants().ToList();
        var raw = elements.Where(e => (string?)e.Attribute("class") == "raw").Select(e => e.Attribute("points")!.Value.Split(' ').Length).ToList();
        Assert.Equal([2, 3], raw); // the NaN splits the raw line in two
        var smoothed = elements.Single(e => (string?)e.Attribute("class") == "smoothed").Attribute("points")!.Value.Split(' ');
        Assert.Equal(6, smoothed.Length); // the smoothed line carries over the skipped step
        Assert.Equal(2, elements.Count(e => (string?)e.Attribute("class") == "eval"));
        Assert.Contains(elements, e => e.Name.LocalName == "text" && e.Value == "run <1> & co");
        // "Nice" y ticks cover the data: 1.0 … 3.0 in steps of 0.5 (labels drawn right-aligned at the axis).
        var labels = elements.Where(e => e.Name.LocalName == "text" && (string?)e.Attribute("text-anchor") == "end").Select(e => e.Value).ToList();
        Assert.Equal(["1.0", "1.5", "2.0", "2.5", "3.0"], labels);

        // Smoothed values are the debiased moving average of the finite losses (checked through the y coordinates).
        double Y(string point) => double.Parse(point.Split(',')[1], System.Globalization.CultureInfo.InvariantCulture);
        double top = 44, height = 420 - 44 - 52;
        double ToLoss(double y) => 3.0 - (y - top) / height * 2.0;
        double beta = Math.Clamp(1 - 10.0 / losses.Length, 0, 0.98), ema = 0, weight = 0, worst = 0;
        for (int i = 0; i < losses.Length; i++)
        {
            if (float.IsFinite(losses[i])) (ema, weight) = (beta * ema + (1 - beta) * losses[i], beta * weight + (1 - beta));
            worst = Math.Max(worst, Math.Abs(ToLoss(Y(smoothed[i])) - ema / weight));
        }
        Assert.True(worst < 0.01, $"smoothed line off by up to {worst:F4} in loss units");
    }

    [Fact]
    public void Loss_curve_handles_one_step_and_no_finite_loss()
    {
        Assert.Single(XDocument.Parse(LossCurveSvg.Render([2f])).Descendants(), e => e.Name.LocalName == "circle");
        Assert.Contains("no finite loss", LossCurveSvg.Render([float.NaN, float.NaN]));
        Assert.Throws<ArgumentException>(() => LossCurveSvg.Render([]));
    }

    [Fact]
    public void Metrics_line_is_json_with_nulls_for_non_finite_values()
    {
        var line = MetricsJsonl.FormatLine(new TrainerProgress(7, 10, float.NaN, 2e-4f, 0.5f, 1234.56, 1.25f, 1, TimeSpan.FromSeconds(3.5)));
        Assert.Equal("{\"step\":7,\"loss\":null,\"lr\":0.0002,\"grad_norm\":0.5,\"tokens_per_s\":1234.6,\"eval_loss\":1.25,\"elapsed_s\":3.500}", line);
    }

    [Fact]
    public void Progress_bar_redraws_on_a_terminal_and_prints_tenths_when_redirected()
    {
        static TrainerProgress Step(int s) => new(s, 100, 2f - s / 100f, 1e-3f, 1f, 1000, null, 0, TimeSpan.FromSeconds(s * 0.5));
        var log = new StringWriter();
        var redirected = new TrainingProgressBar(log, interactive: false);
        for (int s = 1; s <= 100; s++) redirected.Report(Step(s));
        var lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(11, lines.Length); // step 1, then every 10th
        Assert.DoesNotContain('\r', log.ToString());
        Assert.Contains("100/100", lines[^1]);
        Assert.Contains("ETA 0:25", lines[5]); // step 50 after 25 s: 50 more steps at 0.5 s

        var terminal = new StringWriter();
        var bar = new TrainingProgressBar(terminal, interactive: true);
        for (int s = 1; s <= 100; s++) bar.Report(Step(s));
        Assert.Equal(100, terminal.ToString().Count(c => c == '\r'));
        Assert.EndsWith(Environment.NewLine, terminal.ToString());
        Assert.Contains("[████████████████████████] 100/100  loss 1.0000", terminal.ToString());
    }
}
