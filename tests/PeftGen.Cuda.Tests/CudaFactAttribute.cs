using System.Runtime.CompilerServices;
using PeftGen.Backends.Cuda;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>
/// A fact that needs a CUDA device. The attribute probes once (libraries found and loaded, driver initialised, device 0
/// present) and sets <see cref="FactAttribute.Skip"/> at construction with the reason, which names everything the
/// resolver searched. On a machine with a GPU the bundle's run.sh runs the test executable with <c>-failSkips</c>, so a
/// CUDA test that skips there fails.
/// </summary>
public sealed class CudaFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> s_skipReason = new(() =>
        DeviceSelection.IsAvailable(new Device(DeviceType.Cuda, 0), out var reason) ? null : "no CUDA device: " + reason);

    public CudaFactAttribute([CallerFilePath] string? sourceFilePath = null, [CallerLineNumber] int sourceLineNumber = -1)
        : base(sourceFilePath, sourceLineNumber)
    {
        if (s_skipReason.Value is { } reason) Skip = reason;
    }

    /// <summary>Why CUDA tests skip on this machine (null when a device is present).</summary>
    public static string? SkipReason => s_skipReason.Value;
}
