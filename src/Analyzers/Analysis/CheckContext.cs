using System.Collections.Generic;
using System.Collections.Immutable;
using System.Globalization;
using System.Threading;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>What a rule sees of one class (its <see cref="ModelAnalysis"/>, the compilation's configs) and where it reports.</summary>
internal sealed class CheckContext
{
    private readonly List<Diagnostic> _diagnostics = new();

    public CheckContext(ModelAnalysis model, PeftCompilation compilation, CancellationToken cancellationToken)
    {
        Model = model;
        Compilation = compilation;
        CancellationToken = cancellationToken;
        Config = ModelPlanner.FindConfig(model.Declaration.Companions.ModelConfigPath, compilation.Configs(cancellationToken));
    }

    public ModelAnalysis Model { get; }

    public ModelDeclaration Declaration => Model.Declaration;

    public INamedTypeSymbol Type => Model.Type;

    public PeftCompilation Compilation { get; }

    public CancellationToken CancellationToken { get; }

    /// <summary>The config.json the class's <c>[ModelConfig]</c> names, when it is an additional file the generator reads.</summary>
    public ModelConfigSpec? Config { get; }

    /// <summary>Where each argument of <paramref name="attribute"/> is written.</summary>
    public AttributeArguments Arguments(AttributeData attribute) => AttributeArguments.Of(attribute, CancellationToken);

    public void Report(DiagnosticDescriptor descriptor, Location location, params object?[] arguments) =>
        _diagnostics.Add(Diagnostic.Create(descriptor, location, arguments));

    public void Report(DiagnosticDescriptor descriptor, Location location, ImmutableDictionary<string, string?> properties, params object?[] arguments) =>
        _diagnostics.Add(Diagnostic.Create(descriptor, location, properties, arguments));

    public ImmutableArray<Diagnostic> Diagnostics => _diagnostics.ToImmutableArray();

    /// <summary>A number in a message: four significant digits, invariant.</summary>
    public static string Number(double value) => value.ToString("G4", CultureInfo.InvariantCulture);

    /// <summary>A whole number in a message, invariant.</summary>
    public static string Number(long value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>The attribute's name as written in C#: "VeRA" for <c>PeftGen.VeRAAttribute</c>.</summary>
    public static string ShortName(AttributeData attribute)
    {
        string name = attribute.AttributeClass?.Name ?? "";
        return name.EndsWith("Attribute", System.StringComparison.Ordinal) ? name.Substring(0, name.Length - "Attribute".Length) : name;
    }
}
