namespace PeftGen.IO;

/// <summary>
/// Replaces files so that readers (and a crash) see either the old or the new content, never half of one: write a
/// temporary file beside the target, flush it to disk, then rename it over the target. Also the quiet clean-up of a
/// failed write and the positioned reads the streaming checkpoint readers share.
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
    public static void TryDelete(string path) => Quietly(() => File.Delete(path));

    /// <summary>Deletes <paramref name="folder"/> when it is empty (a failed write created it), keeping quiet when that fails.</summary>
    public static void TryDeleteEmptyFolder(string folder) => Quietly(() =>
    {
        if (Directory.Exists(folder) && !Directory.EnumerateFileSystemEntries(folder).Any()) Directory.Delete(folder);
    });

    /// <summary>
    /// Reads <paramref name="buffer"/> from <paramref name="offset"/> of the file with positioned reads (no stream buffer:
    /// what is read is what the file holds now) and returns how many bytes were read: fewer only when the file ends first.
    /// </summary>
    public static int ReadAt(Microsoft.Win32.SafeHandles.SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        int read = 0;
        while (read < buffer.Length)
        {
            int got = RandomAccess.Read(handle, buffer[read..], offset + read);
            if (got == 0) break;
            read += got;
        }
        return read;
    }

    private static void Quietly(Action cleanUp)
    {
        try
        {
            cleanUp();
        }
        catch (IOException)
        {
            // Keep the caller's exception; a stray temporary file or folder is the lesser problem.
        }
        catch (UnauthorizedAccessException)
        {
            // Same as above.
        }
    }
}
