namespace PeftGen.IO;

/// <summary>
/// Replaces files so that readers (and a crash) see either the old or the new content, never half of one: write a
/// temporary file beside the target, flush it to disk, then rename it over the target.
/// </summary>
internal static class AtomicFile
{
    /// <summary>A fresh temporary name in the folder of <paramref name="path"/> (same file system, so the rename is atomic).</summary>
    public static string TempPathFor(string path) => Path.GetFullPath(path) + ".tmp-" + Guid.NewGuid().ToString("N");

    /// <summary>Writes <paramref name="content"/> to <paramref name="path"/> atomically.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> content)
    {
        string temp = TempPathFor(path);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(content);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>Deletes a leftover temporary file, keeping quiet when that fails: the original error matters more.</summary>
    public static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Keep the caller's exception; a stray temporary file is the lesser problem.
        }
        catch (UnauthorizedAccessException)
        {
            // Same as above.
        }
    }
}
