using System.Reflection;
using Microsoft.CodeAnalysis;

namespace PeftGen.CodeFixes.Tests.TestSupport;

/// <summary>
/// The analyzers' descriptors. DiagnosticCatalog is internal to PeftGen.Analyzers and open to the code fixes only, so the
/// tests read it by reflection rather than duplicating ids and message formats that the fixes depend on.
/// </summary>
internal static class Catalog
{
    public static Assembly AnalyzersAssembly { get; } = Assembly.Load("PeftGen.Analyzers");

    private static readonly Type CatalogType = AnalyzersAssembly.GetType("PeftGen.Analyzers.DiagnosticCatalog", throwOnError: true)!;

    public static DiagnosticDescriptor ClassNotPartial { get; } = Descriptor(nameof(ClassNotPartial));

    public static DiagnosticDescriptor ReadOnlyTarget { get; } = Descriptor(nameof(ReadOnlyTarget));

    public static DiagnosticDescriptor UnknownTarget { get; } = Descriptor(nameof(UnknownTarget));

    public static string SuggestionProperty { get; } = (string)Field(nameof(SuggestionProperty)).GetValue(null)!;

    private static DiagnosticDescriptor Descriptor(string name) => (DiagnosticDescriptor)Field(name).GetValue(null)!;

    private static FieldInfo Field(string name) =>
        CatalogType.GetField(name, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)
        ?? throw new InvalidOperationException($"DiagnosticCatalog has no field {name}.");
}
