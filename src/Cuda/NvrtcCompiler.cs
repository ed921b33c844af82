using System.Runtime.InteropServices;
using System.Text;
using PeftGen.Backends.Cuda.Native;

namespace PeftGen.Backends.Cuda;

/// <summary>The production <see cref="KernelCompiler"/>: NVRTC, producing CUBIN for a real architecture (sm_XY).</summary>
internal static unsafe class NvrtcCompiler
{
    /// <summary>NVRTC's version as "major.minor".</summary>
    public static string Version()
    {
        int major, minor;
        CudaErrors.CheckNvrtc(Nvrtc.Version(&major, &minor), "nvrtcVersion");
        return $"{major}.{minor}";
    }

    /// <summary>The options every module is compiled with for compute capability major.minor.</summary>
    public static IReadOnlyList<string> Options(int major, int minor) => Options(Architecture(major, minor));

    /// <summary>The options every module is compiled with for <paramref name="architecture"/> ("sm_90").</summary>
    public static IReadOnlyList<string> Options(string architecture) =>
        [$"--gpu-architecture={architecture}", "--std=c++17", "--device-as-default-execution-space", "-lineinfo"];

    /// <summary>The real architecture name of a compute capability ("sm_90").</summary>
    public static string Architecture(int major, int minor) => $"sm_{major}{minor}";

    /// <summary>Compiles <paramref name="source"/> and returns its CUBIN; a compile error throws with the compiler log.</summary>
    public static byte[] Compile(string source, string name, IReadOnlyList<string> options)
    {
        var sourceBytes = NullTerminated(source);
        var nameBytes = NullTerminated(name + ".cu");
        IntPtr program;
        fixed (byte* s = sourceBytes)
        fixed (byte* n = nameBytes)
            CudaErrors.CheckNvrtc(Nvrtc.CreateProgram(&program, s, n, 0, null, null), $"nvrtcCreateProgram({name})");
        var handles = new List<GCHandle>();
        try
        {
            var pointers = new IntPtr[options.Count];
            for (int i = 0; i < options.Count; i++)
            {
                var handle = GCHandle.Alloc(NullTerminated(options[i]), GCHandleType.Pinned);
                handles.Add(handle);
                pointers[i] = handle.AddrOfPinnedObject();
            }
            int result;
            fixed (IntPtr* p = pointers)
                result = Nvrtc.CompileProgram(program, options.Count, (byte**)p);
            CudaErrors.CheckNvrtc(result, $"nvrtcCompileProgram({name}.cu, {string.Join(' ', options)})", result == 0 ? null : Log(program));
            nuint size;
            CudaErrors.CheckNvrtc(Nvrtc.GetCubinSize(program, &size), "nvrtcGetCUBINSize");
            var image = new byte[(int)size];
            fixed (byte* i = image)
                CudaErrors.CheckNvrtc(Nvrtc.GetCubin(program, i), "nvrtcGetCUBIN");
            return image;
        }
        finally
        {
            foreach (var handle in handles) handle.Free();
            Nvrtc.DestroyProgram(&program);
        }
    }

    private static string Log(IntPtr program)
    {
        nuint size;
        if (Nvrtc.GetProgramLogSize(program, &size) != 0 || size <= 1) return "";
        var log = new byte[(int)size];
        fixed (byte* l = log)
            if (Nvrtc.GetProgramLog(program, l) != 0) return "";
        return Encoding.UTF8.GetString(log, 0, log.Length - 1);
    }

    private static byte[] NullTerminated(string text)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(text) + 1];
        Encoding.UTF8.GetBytes(text, bytes);
        return bytes;
    }
}
