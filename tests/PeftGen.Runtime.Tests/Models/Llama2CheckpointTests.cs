using PeftGen.IO;
using Xunit;

namespace PeftGen.Tests.Models;

/// <summary>Malformed llama2.c checkpoints end in clear errors, never crashes or hangs.</summary>
public class Llama2CheckpointTests
{
    private static string Write(params int[] header)
    {
        var path = Path.Combine(Path.GetTempPath(), $"peftgen-ckpt-{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(path, header.SelectMany(BitConverter.GetBytes).ToArray());
        return path;
    }

    [Theory]
    [InlineData(new[] { 64, 172, 5, 8, 4, 512 }, "too short")]                       // header cut off
    [InlineData(new[] { 64, 172, 5, 8, 3, 512, 512 }, "multiple of num_key_value_heads")]
    [InlineData(new[] { 0, 172, 5, 8, 4, 512, 512 }, "hidden_size")]
    [InlineData(new[] { 64, 172, 5, 8, 4, int.MinValue, 512 }, "out of range")]
    [InlineData(new[] { 64, 172, 5, 8, 4, 512, 512 }, "truncated")]                    // header only, no weights
    [InlineData(new[] { 1 << 24, 172, 5, 8, 4, 512, 512 }, "out of range")]            // absurd size: no huge allocation
    public void Bad_files_are_reported_with_their_path(int[] header, string expected)
    {
        var path = Write(header);
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => Llama2Checkpoint.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(expected, e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Missing_file_is_reported()
    {
        var e = Assert.Throws<FileNotFoundException>(() => Llama2Checkpoint.Load("/nonexistent/model.bin"));
        Assert.Contains("/nonexistent/model.bin", e.Message);
    }
}
