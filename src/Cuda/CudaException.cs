namespace PeftGen.Backends.Cuda;

/// <summary>A CUDA driver, cuBLAS or NVRTC call failed. The message names the call, the error code and its meaning.</summary>
public class CudaException : Exception
{
    /// <summary>Creates the exception for a failed call.</summary>
    /// <param name="library">"CUDA driver", "cuBLAS", "cuBLASLt" or "NVRTC".</param>
    /// <param name="call">The function that failed, with what it was doing.</param>
    /// <param name="code">The numeric status.</param>
    /// <param name="errorName">The status's symbolic name (CUDA_ERROR_OUT_OF_MEMORY, ...).</param>
    /// <param name="description">What the status means, and what to do where known.</param>
    internal CudaException(string library, string call, int code, string errorName, string description)
        : base($"{library} call {call} failed with {errorName} ({code}): {description}")
    {
        Library = library;
        Call = call;
        Code = code;
        ErrorName = errorName;
    }

    /// <summary>Creates the exception with a plain message.</summary>
    /// <param name="message">The message.</param>
    public CudaException(string message) : base(message)
    {
        Library = Call = ErrorName = "";
    }

    /// <summary>Creates the exception with a generic message.</summary>
    public CudaException() : this("A CUDA call failed.")
    {
    }

    /// <summary>Creates the exception with a plain message and a cause.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public CudaException(string message, Exception innerException) : base(message, innerException)
    {
        Library = Call = ErrorName = "";
    }

    /// <summary>The library whose call failed.</summary>
    public string Library { get; }

    /// <summary>The call that failed.</summary>
    public string Call { get; }

    /// <summary>The numeric status the call returned.</summary>
    public int Code { get; }

    /// <summary>The status's symbolic name.</summary>
    public string ErrorName { get; }
}

/// <summary>The GPU ran out of memory; the message says how much was asked for and what was free.</summary>
public sealed class CudaOutOfMemoryException : CudaException
{
    /// <summary>Creates the exception for a failed call.</summary>
    /// <param name="library">The library.</param>
    /// <param name="call">The call.</param>
    /// <param name="code">The numeric status.</param>
    /// <param name="errorName">The symbolic status.</param>
    /// <param name="description">What happened and what to do.</param>
    internal CudaOutOfMemoryException(string library, string call, int code, string errorName, string description)
        : base(library, call, code, errorName, description)
    {
    }

    /// <summary>Creates the exception with a generic message.</summary>
    public CudaOutOfMemoryException() : base("The GPU ran out of memory.")
    {
    }

    /// <summary>Creates the exception with a plain message.</summary>
    /// <param name="message">The message.</param>
    public CudaOutOfMemoryException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception with a plain message and a cause.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public CudaOutOfMemoryException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
