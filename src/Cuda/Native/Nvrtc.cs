using System.Runtime.InteropServices;

namespace PeftGen.Backends.Cuda.Native;

/// <summary>
/// NVRTC (<c>libnvrtc.so</c>, <c>nvrtc.h</c>): compiles CUDA C++ source to PTX or CUBIN at run time. Every function
/// returns an <c>nvrtcResult</c> (0 = success) checked by <see cref="CudaErrors.CheckNvrtc"/>.
/// </summary>
internal static unsafe partial class Nvrtc
{
    private const string Lib = CudaNativeLibraries.NvrtcName;

    /// <summary><c>NVRTC_ERROR_COMPILATION</c>: the source did not compile; the program log says why.</summary>
    public const int ErrorCompilation = 6;

    [LibraryImport(Lib, EntryPoint = "nvrtcVersion")]
    public static partial int Version(int* major, int* minor);

    [LibraryImport(Lib, EntryPoint = "nvrtcGetErrorString")]
    public static partial byte* GetErrorString(int result);

    [LibraryImport(Lib, EntryPoint = "nvrtcCreateProgram")]
    public static partial int CreateProgram(IntPtr* program, byte* source, byte* name, int headerCount, byte** headers, byte** includeNames);

    [LibraryImport(Lib, EntryPoint = "nvrtcDestroyProgram")]
    public static partial int DestroyProgram(IntPtr* program);

    [LibraryImport(Lib, EntryPoint = "nvrtcCompileProgram")]
    public static partial int CompileProgram(IntPtr program, int optionCount, byte** options);

    [LibraryImport(Lib, EntryPoint = "nvrtcGetProgramLogSize")]
    public static partial int GetProgramLogSize(IntPtr program, nuint* size);

    [LibraryImport(Lib, EntryPoint = "nvrtcGetProgramLog")]
    public static partial int GetProgramLog(IntPtr program, byte* log);

    [LibraryImport(Lib, EntryPoint = "nvrtcGetPTXSize")]
    public static partial int GetPtxSize(IntPtr program, nuint* size);

    [LibraryImport(Lib, EntryPoint = "nvrtcGetPTX")]
    public static partial int GetPtx(IntPtr program, byte* ptx);

    [LibraryImport(Lib, EntryPoint = "nvrtcGetCUBINSize")]
    public static partial int GetCubinSize(IntPtr program, nuint* size);

    [LibraryImport(Lib, EntryPoint = "nvrtcGetCUBIN")]
    public static partial int GetCubin(IntPtr program, byte* cubin);
}
