namespace PeftGen;

/// <summary>
/// Names the Hugging Face <c>config.json</c> of the model, so the generator knows a library model's shapes (hidden_size,
/// intermediate_size, heads, layers, vocab_size, tie_word_embeddings) at compile time and can emit the adapter plan.
/// Pass the file to the compiler as an additional file: <c>&lt;AdditionalFiles Include="config.json" /&gt;</c>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class ModelConfigAttribute : Attribute
{
    /// <summary>Names the config file.</summary>
    /// <param name="path">The file's path, or its trailing segments, as given to AdditionalFiles ("config.json", "models/tiny/config.json").</param>
    public ModelConfigAttribute(string path) => Path = path;

    /// <summary>The config file's path or its trailing segments.</summary>
    public string Path { get; }
}
