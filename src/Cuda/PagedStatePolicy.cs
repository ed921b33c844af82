namespace PeftGen.Backends.Cuda;

/// <summary>Where one optimizer-state buffer is placed.</summary>
internal enum StatePlacement
{
    /// <summary>CUDA unified (managed) memory: on the device, evicted to the host by the driver under pressure.</summary>
    Managed,

    /// <summary>Pinned host memory mapped into the device's address space: always fits, read over PCIe.</summary>
    HostMapped,
}

/// <summary>
/// Paged optimizer state (bitsandbytes' paged optimizers) on the GPU: state goes in unified memory so the driver can page
/// it out when activations need the room. The rule here is never to ask for more managed memory than the device has free
/// minus a headroom (oversubscribing unified memory turns every step into page thrashing): buffers are placed in order
/// while they fit, and the rest goes to mapped host memory. Pure functions of the figures, so they are tested on the CPU.
/// </summary>
internal static class PagedStatePolicy
{
    /// <summary>The least headroom kept free for activations and cuBLAS workspaces.</summary>
    public const long MinHeadroomBytes = 512L << 20;

    /// <summary>Headroom as a fraction of total device memory when that is larger than <see cref="MinHeadroomBytes"/>.</summary>
    public const double HeadroomFraction = 0.05;

    /// <summary>The bytes of managed memory that may be requested: free − max(512 MiB, 5 % of total), never negative.</summary>
    public static long ManagedBudget(long freeBytes, long totalBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(freeBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(totalBytes);
        if (freeBytes > totalBytes)
            throw new ArgumentException($"Free device memory ({freeBytes:N0} bytes) exceeds the total ({totalBytes:N0} bytes).", nameof(freeBytes));
        long headroom = Math.Max(MinHeadroomBytes, (long)(totalBytes * HeadroomFraction));
        return Math.Max(0, freeBytes - headroom);
    }

    /// <summary>
    /// Places buffers of <paramref name="sizes"/> bytes in order: each goes to managed memory while the running total stays
    /// within <see cref="ManagedBudget"/>, otherwise to mapped host memory (so a later, smaller buffer may still fit).
    /// </summary>
    public static StatePlacement[] Place(IReadOnlyList<long> sizes, long freeBytes, long totalBytes)
    {
        ArgumentNullException.ThrowIfNull(sizes);
        long budget = ManagedBudget(freeBytes, totalBytes);
        var placement = new StatePlacement[sizes.Count];
        long used = 0;
        for (int i = 0; i < sizes.Count; i++)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(sizes[i], $"sizes[{i}]");
            if (used + sizes[i] <= budget)
            {
                placement[i] = StatePlacement.Managed;
                used += sizes[i];
            }
            else
            {
                placement[i] = StatePlacement.HostMapped;
            }
        }
        return placement;
    }
}
