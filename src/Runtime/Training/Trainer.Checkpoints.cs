using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using PeftGen.Tensors;

namespace PeftGen.Training;

/// <summary>
/// The trainer's checkpoints: trainable weights (by parameter path), optimizer state, step (and so the schedule), the
/// random generators' states, the data positions and the metrics log up to the step, written into a temporary folder
/// renamed into place, from which a resumed run continues exactly as an uninterrupted one.
/// </summary>
public sealed partial class Trainer
{
    /// <summary>
    /// Writes a checkpoint folder atomically: everything goes to a temporary sibling folder that is renamed into
    /// place only when complete, so a crash mid-write leaves the previous checkpoints untouched and no partial one.
    /// </summary>
    public void SaveCheckpoint(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var full = Path.GetFullPath(directory);
        var parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        var temp = Path.Combine(parent, $".{Path.GetFileName(full)}.partial-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            WriteFile(Path.Combine(temp, WeightsFile), stream =>
            {
                using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
                w.Write("PeftGen.TrainableWeights");
                w.Write(_parameters.Count);
                foreach (var (path, tensor) in _parameters)
                {
                    w.Write(path);
                    w.Write(tensor.Count);
                    // A GPU parameter (--device cuda) is written from a host copy; the file is the same.
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(
                        tensor.Device.Type == DeviceType.Cpu ? tensor.AsSpan() : tensor.ToArray().AsSpan()));
                }
            });
            WriteFile(Path.Combine(temp, OptimizerFile), stream =>
            {
                using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
                _optimizer.WriteState(w);
            });
            var state = new CheckpointState
            {
                Step = _step,
                DataPosition = _train.Position,
                EvalPosition = _eval?.Position,
                RngStates = _rngs.Select(r => r.State).ToArray(),
                Losses = _losses.ToArray(),
                EvalSteps = _evalLosses.Select(e => e.Item1).ToArray(),
                EvalLosses = _evalLosses.Select(e => e.Item2).ToArray(),
                SkippedSteps = _skipped,
                MaxSteps = Options.MaxSteps,
                LearningRate = Options.LearningRate,
                Schedule = Options.Schedule,
            };
            WriteFile(Path.Combine(temp, StateFile), stream =>
                JsonSerializer.Serialize(stream, state, TrainerJsonContext.Default.CheckpointState));
            // The metrics log up to this step, from which a resumed run continues its log (see MetricsFile).
            if (MetricsFile is { } metrics && File.Exists(metrics)) File.Copy(metrics, Path.Combine(temp, MetricsJsonl.FileName));
            if (Directory.Exists(full))
            {
                var old = full + $".old-{Guid.NewGuid():N}";
                Directory.Move(full, old);
                Directory.Move(temp, full);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(temp, full);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        PruneCheckpoints(parent);
    }

    /// <summary>Restores weights, optimizer, schedule position, random generators and data position from a checkpoint folder.</summary>
    /// <exception cref="InvalidDataException">The folder is incomplete or does not belong to this model/optimizer (names the file).</exception>
    public void LoadCheckpoint(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        foreach (var file in (string[])[StateFile, WeightsFile, OptimizerFile])
            if (!File.Exists(Path.Combine(directory, file)))
                throw new InvalidDataException($"{directory} is not a complete checkpoint: {file} is missing.");
        CheckpointState state;
        var statePath = Path.Combine(directory, StateFile);
        try
        {
            state = JsonSerializer.Deserialize(File.ReadAllText(statePath), TrainerJsonContext.Default.CheckpointState)
                ?? throw new InvalidDataException($"{statePath} is empty.");
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or ArgumentException)
        {
            throw new InvalidDataException($"{statePath} is not valid checkpoint state: {Quote(e.Message, 200)}", e);
        }
        void RequireState(bool ok, string field, object? value, string rule)
        {
            if (!ok) throw new InvalidDataException($"{statePath}: \"{field}\" = {Quote(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "null")} {rule}.");
        }
        // A field written as null in the JSON reads as null despite its type: treat it as empty (then reported below).
        state.Losses ??= [];
        state.EvalSteps ??= [];
        state.EvalLosses ??= [];
        state.RngStates ??= [];
        RequireState(state.Step >= 0, "step", state.Step, "must be ≥ 0");
        RequireState(state.DataPosition >= 0, "data_position", state.DataPosition, "must be ≥ 0");
        RequireState(state.EvalPosition is null or >= 0, "eval_position", state.EvalPosition, "must be ≥ 0");
        RequireState(state.SkippedSteps >= 0 && state.SkippedSteps <= state.Step, "skipped_steps", state.SkippedSteps, $"must be in [0, step = {state.Step}]");
        RequireState(state.Losses.Length == state.Step, "losses", $"[{state.Losses.Length} values]", $"must hold one value per step ({state.Step})");
        RequireState(state.EvalSteps.Length == state.EvalLosses.Length,
            "eval_steps", $"[{state.EvalSteps.Length} values]", $"must match the {state.EvalLosses.Length} values of \"eval_losses\"");
        RequireState(state.RngStates.Length == _rngs.Count, "rng_states", $"[{state.RngStates.Length} states]",
            $"must hold one state per random generator of this run ({_rngs.Count})");

        var weightsPath = Path.Combine(directory, WeightsFile);
        using (var r = new BinaryReader(File.OpenRead(weightsPath)))
        {
            try
            {
                if (r.ReadString() != "PeftGen.TrainableWeights") throw new InvalidDataException($"{weightsPath} is not a PeftGen weights file.");
                int count = r.ReadInt32();
                var byPath = _parameters.ToDictionary(p => p.Path, p => p.Tensor);
                if (count != byPath.Count)
                    throw new InvalidDataException($"{weightsPath} holds {count} trainable tensors; the model has {byPath.Count} (different adapters or targets?).");
                for (int i = 0; i < count; i++)
                {
                    string path = r.ReadString();
                    long n = r.ReadInt64();
                    if (!byPath.TryGetValue(path, out var t))
                        throw new InvalidDataException($"{weightsPath}: tensor '{Quote(path)}' is not a trainable parameter of this model.");
                    if (n != t.Count)
                        throw new InvalidDataException($"{weightsPath}: '{path}' has {n} values; the model's has {t.Count}.");
                    if (t.Device.Type == DeviceType.Cpu) r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.AsSpan()));
                    else
                    {
                        // A GPU parameter is read into a host tensor, then copied to the device.
                        using var host = Tensor.Zeros(t.ShapeArray);
                        r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(host.AsSpan()));
                        t.CopyFrom(host);
                    }
                }
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidDataException($"{weightsPath} is truncated.", e);
            }
            catch (Exception e) when (e is not InvalidDataException and not OutOfMemoryException)
            {
                throw new InvalidDataException($"{weightsPath} is not a valid weights file: {Quote(e.Message)}", e);
            }
        }
        var optimizerPath = Path.Combine(directory, OptimizerFile);
        using (var r = new BinaryReader(File.OpenRead(optimizerPath)))
        {
            try
            {
                _optimizer.ReadState(r);
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidDataException($"{optimizerPath} is truncated.", e);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The optimizer's message may quote what it read (a corrupt file's bytes): quote at most 100 characters.
                throw new InvalidDataException(
                    $"{optimizerPath} does not hold the state of this run's optimizer ({Options.Optimizer}): {Quote(e.Message)}", e);
            }
        }
        for (int i = 0; i < _rngs.Count; i++)
        {
            try
            {
                _rngs[i].State = state.RngStates[i];
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{statePath}: \"rng_states\"[{i}] is not a generator state: {Quote(e.Message)}", e);
            }
        }
        _train.Position = state.DataPosition;
        if (_eval != null && state.EvalPosition is long evalPosition) _eval.Position = evalPosition;
        _step = state.Step;
        _skipped = state.SkippedSteps;
        _losses.Clear();
        _losses.AddRange(state.Losses);
        _evalLosses.Clear();
        _evalLosses.AddRange(state.EvalSteps.Zip(state.EvalLosses));
    }

    /// <summary>The newest complete checkpoint folder under <paramref name="outputDir"/>, or null.</summary>
    public static string? LatestCheckpoint(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return null;
        return CompleteCheckpoints(outputDir).LastOrDefault().Path;
    }

    private static List<(int Step, string Path)> CompleteCheckpoints(string outputDir) =>
        Directory.GetDirectories(outputDir, CheckpointPrefix + "*")
            .Select(d => (Ok: int.TryParse(Path.GetFileName(d)[CheckpointPrefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int s), Step: s, Path: d))
            .Where(c => c.Ok && File.Exists(Path.Combine(c.Path, StateFile)))
            .OrderBy(c => c.Step)
            .Select(c => (c.Step, c.Path))
            .ToList();

    private void PruneCheckpoints(string outputDir)
    {
        var all = CompleteCheckpoints(outputDir);
        foreach (var (_, path) in all.Take(Math.Max(0, all.Count - Options.KeepCheckpoints))) TryDelete(path);
    }

    private void WriteFile(string path, Action<Stream> write)
    {
        BeforeCheckpointFileWrite?.Invoke(path);
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        write(stream);
        stream.Flush(flushToDisk: true);
    }

    private static void TryDelete(string directory)
    {
        try
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temporary folder is ignored by LatestCheckpoint.
        }
    }

    /// <summary>Where metrics lines go: <see cref="TrainerOptions.MetricsPath"/>, else metrics.jsonl in the output folder, else nowhere.</summary>
    private string? MetricsFile => Options.MetricsPath ?? (Options.OutputDir is { } dir ? Path.Combine(dir, MetricsJsonl.FileName) : null);

    /// <summary>The metrics log a checkpoint folder keeps (the log up to its step), or null for a checkpoint written without one.</summary>
    internal static string? CheckpointMetrics(string checkpointDir)
    {
        var path = Path.Combine(checkpointDir, MetricsJsonl.FileName);
        return File.Exists(path) ? path : null;
    }

    /// <summary>The step of a checkpoint folder, from its name <c>checkpoint-N</c>, or null when the name is not one.</summary>
    public static int? CheckpointStep(string checkpointDir)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(checkpointDir));
        return name.StartsWith(CheckpointPrefix, StringComparison.Ordinal)
            && int.TryParse(name.AsSpan(CheckpointPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int step) ? step : null;
    }

    /// <summary>
    /// Text read from a file, fit to quote in a message: control and non-ASCII characters become '?', and at most
    /// <paramref name="max"/> characters are kept (a corrupt file must never be dumped into an error).
    /// </summary>
    internal static string Quote(string text, int max = 100)
    {
        var chars = text.Take(max + 1).Select(c => c >= ' ' && c <= '~' ? c : '?').ToArray();
        return chars.Length > max ? new string(chars, 0, max) + "…" : new string(chars);
    }
}

internal sealed class CheckpointState
{
    [JsonPropertyName("format")] public int Format { get; set; } = 1;
    [JsonPropertyName("step")] public int Step { get; set; }
    [JsonPropertyName("data_position")] public long DataPosition { get; set; }
    [JsonPropertyName("eval_position")] public long? EvalPosition { get; set; }
    [JsonPropertyName("rng_states")] public ulong[][] RngStates { get; set; } = [];
    [JsonPropertyName("losses")] public float[] Losses { get; set; } = [];
    [JsonPropertyName("eval_steps")] public int[] EvalSteps { get; set; } = [];
    [JsonPropertyName("eval_losses")] public float[] EvalLosses { get; set; } = [];
    [JsonPropertyName("skipped_steps")] public int SkippedSteps { get; set; }
    [JsonPropertyName("max_steps")] public int MaxSteps { get; set; }
    [JsonPropertyName("learning_rate")] public float LearningRate { get; set; }
    [JsonPropertyName("schedule")] public string Schedule { get; set; } = "";
}

[JsonSourceGenerationOptions(WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(CheckpointState))]
internal sealed partial class TrainerJsonContext : JsonSerializerContext;
