using PeftGen.Backends;

namespace PeftGen.Cli;

/// <summary>
/// Turns failures into one clear line on stderr and an exit code scripts can rely on:
/// 0 success, 1 bad input (files, settings), 2 usage (handled by the parser), 3 internal error,
/// 4 device not available (--device cuda), 130 cancelled.
/// </summary>
internal static class CliErrors
{
    public const int BadInput = 1;
    public const int Usage = 2;
    public const int Internal = 3;
    public const int DeviceNotAvailable = 4;
    public const int Cancelled = 130;

    public static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled");
            return Cancelled;
        }
        catch (CliError e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return BadInput;
        }
        catch (DeviceNotAvailableException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return DeviceNotAvailable;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException or FormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return BadInput;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"internal error: {e}");
            return Internal;
        }
    }
}

/// <summary>A mistake in what the user asked for (an option out of range, a run that cannot go on), worded in the CLI's terms: "error: message", exit code 1.</summary>
internal sealed class CliError(string message, Exception? inner = null) : Exception(message, inner);
