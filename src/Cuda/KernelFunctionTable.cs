namespace PeftGen.Backends.Cuda;

/// <summary>
/// A context's loaded modules and kernel handles. Tests and a program's threads launch kernels on one context at the
/// same time, so the first use of a module (compile, load) and of a kernel (look-up) happens under a lock: each module is
/// loaded once and each kernel looked up once, whichever threads ask first.
/// </summary>
/// <typeparam name="TModule">The module key (<see cref="CudaModule"/>).</typeparam>
/// <param name="loadModule">Compiles (through the cache) and loads a module; returns its handle.</param>
/// <param name="getFunction">Looks a kernel up in a loaded module.</param>
internal sealed class KernelFunctionTable<TModule>(Func<TModule, IntPtr> loadModule, Func<IntPtr, string, IntPtr> getFunction)
    where TModule : notnull
{
    private readonly Lock _lock = new();
    private readonly Dictionary<TModule, IntPtr> _modules = [];
    private readonly Dictionary<(TModule Module, string Name), IntPtr> _functions = [];

    /// <summary>The kernel <paramref name="name"/> of <paramref name="module"/>, loading the module on first use.</summary>
    public IntPtr Get(TModule module, string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        lock (_lock)
        {
            if (_functions.TryGetValue((module, name), out var function)) return function;
            if (!_modules.TryGetValue(module, out var handle))
            {
                handle = loadModule(module);
                _modules[module] = handle;
            }
            function = getFunction(handle, name);
            _functions[(module, name)] = function;
            return function;
        }
    }

    /// <summary>The handles of the modules loaded so far.</summary>
    public IReadOnlyList<IntPtr> LoadedModules
    {
        get
        {
            lock (_lock) return [.. _modules.Values];
        }
    }
}
