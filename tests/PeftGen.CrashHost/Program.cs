// A training process for the trainer's crash test: trains a tiny QLoRA model with checkpoints and, when asked,
// kills itself (SIGKILL: no finally blocks, no flushing) in the middle of writing a checkpoint file.
//   PeftGen.CrashHost <output dir> <max steps> [kill-at-file N]
using PeftGen.CrashHost;
using PeftGen.Training;

string outputDir = args[0];
int maxSteps = int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture);
int killAtFile = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : -1;

using var run = CrashRun.Create(outputDir, maxSteps);
if (Trainer.LatestCheckpoint(outputDir) is { } last) run.Trainer.LoadCheckpoint(last);
int files = 0;
run.Trainer.BeforeCheckpointFileWrite = path =>
{
    if (++files != killAtFile) return;
    // Leave a half-written file behind, as a crash during the write would.
    File.WriteAllBytes(path, new byte[100]);
    System.Diagnostics.Process.GetCurrentProcess().Kill();
};
var losses = run.Trainer.Train().Losses;
Console.WriteLine(string.Join(" ", losses.Select(l => l.ToString("R", System.Globalization.CultureInfo.InvariantCulture))));
