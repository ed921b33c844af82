using System.Diagnostics;

namespace PeftGen.Training;

/// <summary>The process's resident memory, as memory figures in this project are measured: peak resident set of the whole process.</summary>
public static class ProcessMemory
{
    /// <summary>The peak resident set so far in bytes (Linux: VmHWM of /proc/self/status), or 0 where the platform does not say.</summary>
    public static long PeakResidentBytes => Read(self => self.PeakWorkingSet64);

    /// <summary>The current resident set in bytes (Linux: VmRSS), or 0 where the platform does not say.</summary>
    public static long ResidentBytes => Read(self => self.WorkingSet64);

    private static long Read(Func<Process, long> figure)
    {
        try
        {
            using var self = Process.GetCurrentProcess();
            return figure(self);
        }
        catch (Exception e) when (e is InvalidOperationException or PlatformNotSupportedException or NotSupportedException)
        {
            return 0;
        }
    }
}
