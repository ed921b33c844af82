using System.Runtime.InteropServices;
using PeftGen.Backends.Cuda.Native;

namespace PeftGen.Backends.Cuda;

/// <summary>Facts about one GPU, read once from the driver.</summary>
/// <param name="Ordinal">The device ordinal.</param>
/// <param name="Name">The marketing name.</param>
/// <param name="Major">Compute capability, major.</param>
/// <param name="Minor">Compute capability, minor.</param>
/// <param name="Multiprocessors">Streaming multiprocessors.</param>
/// <param name="TotalMemory">Device memory in bytes.</param>
/// <param name="MaxSharedMemoryPerBlockOptin">Largest dynamic shared memory a kernel may opt into.</param>
/// <param name="ConcurrentManagedAccess">Whether unified memory pages on demand (Pascal and later on Linux).</param>
internal sealed record CudaDeviceInfo(int Ordinal, string Name, int Major, int Minor, int Multiprocessors, long TotalMemory,
    int MaxSharedMemoryPerBlockOptin, bool ConcurrentManagedAccess);

/// <summary>Loads the libraries, initialises the driver once and answers which devices exist.</summary>
internal static unsafe class CudaDevices
{
    private static readonly Lock s_lock = new();
    private static int s_count = -1;
    private static readonly Dictionary<int, CudaDeviceInfo> s_info = [];

    /// <summary>Number of visible devices (initialising the driver on first use).</summary>
    /// <exception cref="CudaNotAvailableException">No libraries, no driver or no device.</exception>
    public static int Count
    {
        get
        {
            lock (s_lock)
            {
                if (s_count >= 0) return s_count;
                CudaNativeLibraries.EnsureLoaded();
                CudaErrors.DriverLookup = CudaErrors.LookupInLoadedDriver;
                CudaErrors.Check(CudaDriver.Init(0), "cuInit");
                int count;
                CudaErrors.Check(CudaDriver.DeviceGetCount(&count), "cuDeviceGetCount");
                if (count == 0)
                    throw new CudaNotAvailableException(
                        "CUDA is not available: the driver loaded but sees no device (check nvidia-smi and CUDA_VISIBLE_DEVICES). Without a GPU, use the CPU (--device cpu).");
                s_count = count;
                return count;
            }
        }
    }

    /// <summary>Throws unless device <paramref name="ordinal"/> exists and the driver works.</summary>
    /// <exception cref="CudaNotAvailableException">It does not.</exception>
    public static void EnsureAvailable(int ordinal)
    {
        int count = Count;
        if (ordinal < 0 || ordinal >= count)
            throw new CudaNotAvailableException(
                $"cuda:{ordinal} was requested, but {count} CUDA device(s) are visible (cuda:0{(count > 1 ? $" to cuda:{count - 1}" : "")}).");
    }

    /// <summary>The facts of device <paramref name="ordinal"/>.</summary>
    public static CudaDeviceInfo Info(int ordinal)
    {
        EnsureAvailable(ordinal);
        lock (s_lock)
        {
            if (s_info.TryGetValue(ordinal, out var known)) return known;
            int device;
            CudaErrors.Check(CudaDriver.DeviceGet(&device, ordinal), $"cuDeviceGet({ordinal})");
            var name = new byte[256];
            fixed (byte* n = name) CudaErrors.Check(CudaDriver.DeviceGetName(n, name.Length, device), "cuDeviceGetName");
            nuint total;
            CudaErrors.Check(CudaDriver.DeviceTotalMem(&total, device), "cuDeviceTotalMem");
            var info = new CudaDeviceInfo(ordinal, System.Text.Encoding.UTF8.GetString(name).TrimEnd('\0'),
                Attribute(device, CudaDriver.AttributeComputeCapabilityMajor), Attribute(device, CudaDriver.AttributeComputeCapabilityMinor),
                Attribute(device, CudaDriver.AttributeMultiprocessorCount), (long)total,
                Attribute(device, CudaDriver.AttributeMaxSharedMemoryPerBlockOptin), Attribute(device, CudaDriver.AttributeConcurrentManagedAccess) != 0);
            s_info[ordinal] = info;
            return info;
        }
    }

    private static int Attribute(int device, int attribute)
    {
        int value;
        CudaErrors.Check(CudaDriver.DeviceGetAttribute(&value, attribute, device), $"cuDeviceGetAttribute({attribute})");
        return value;
    }
}
