using Xunit;

namespace PeftGen.Tests.TestSupport;

/// <summary>
/// Finds the read-only model files that CI keeps in a <c>shared</c> folder beside the repository
/// (<c>X/../shared/models/stories260K</c> for a clone at X). A user's clone has no such folder, so
/// tests that need it use <see cref="StoriesFactAttribute"/> or <see cref="StoriesTheoryAttribute"/> and skip.
/// </summary>
public static class SharedModels
{
    /// <summary>Environment variable naming the <c>shared</c> folder, checked before searching.</summary>
    public const string SharedFolderVariable = "PEFTGEN_SHARED";

    /// <summary>Why a test that needs stories260K was skipped.</summary>
    public const string MissingStories260KMessage =
        "needs ../shared/models/stories260K (the repo's sibling 'shared' folder, or set PEFTGEN_SHARED); a user clone has none";

    private const string CheckpointFileName = "stories260K.bin";
    private const string TokenizerFileName = "tok512.bin";

    private static readonly Lazy<string?> Stories260KDirLazy = new(FindStories260KDir);

    /// <summary>The <c>shared/models/stories260K</c> folder, or null when this machine has none.</summary>
    public static string? Stories260KDir => Stories260KDirLazy.Value;

    /// <summary>Path of <c>stories260K.bin</c> (llama2.c checkpoint), or null when absent.</summary>
    public static string? Stories260KCheckpoint => Stories260KDir is { } dir ? Path.Combine(dir, CheckpointFileName) : null;

    /// <summary>Path of <c>tok512.bin</c> (its llama2.c tokenizer), or null when absent.</summary>
    public static string? Stories260KTokenizer => Stories260KDir is { } dir ? Path.Combine(dir, TokenizerFileName) : null;

    /// <summary>Path of a golden file that the test project copies next to the test assembly.</summary>
    /// <param name="fileName">File name inside the project's <c>Golden</c> folder, e.g. <c>stories260K.json</c>.</param>
    /// <returns>The full path.</returns>
    public static string GoldenFile(string fileName) => Path.Combine(AppContext.BaseDirectory, "Golden", fileName);

    /// <summary>
    /// <see cref="SharedFolderVariable"/> wins when it points at a folder holding the model; otherwise the
    /// folders from the test assembly upwards are searched for <c>shared/models/stories260K</c>.
    /// </summary>
    private static string? FindStories260KDir()
    {
        if (Environment.GetEnvironmentVariable(SharedFolderVariable) is { Length: > 0 } shared
            && HasCheckpoint(ModelDirIn(shared)))
        {
            return Path.GetFullPath(ModelDirIn(shared));
        }

        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = ModelDirIn(Path.Combine(dir.FullName, "shared"));
            if (HasCheckpoint(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    private static string ModelDirIn(string sharedFolder) => Path.Combine(sharedFolder, "models", "stories260K");

    private static bool HasCheckpoint(string modelDir) => File.Exists(Path.Combine(modelDir, CheckpointFileName));
}

/// <summary>A fact that needs the shared stories260K model; skipped where it is absent.</summary>
public sealed class StoriesFactAttribute : FactAttribute
{
    /// <summary>Marks the test skipped when <see cref="SharedModels.Stories260KDir"/> is null.</summary>
    public StoriesFactAttribute()
    {
        if (SharedModels.Stories260KDir is null)
        {
            Skip = SharedModels.MissingStories260KMessage;
        }
    }
}

/// <summary>A theory that needs the shared stories260K model; skipped where it is absent.</summary>
public sealed class StoriesTheoryAttribute : TheoryAttribute
{
    /// <summary>Marks the test skipped when <see cref="SharedModels.Stories260KDir"/> is null.</summary>
    public StoriesTheoryAttribute()
    {
        if (SharedModels.Stories260KDir is null)
        {
            Skip = SharedModels.MissingStories260KMessage;
        }
    }
}
