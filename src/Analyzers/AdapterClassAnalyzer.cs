using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers;

/// <summary>
/// The class that carries PeftGen attributes (<see cref="ClassRules"/>): companions need a method they work with
/// (PEFT011), an adapter class must be partial (PEFT001), and its adapters need distinct names (PEFT012).
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class AdapterClassAnalyzer() : PeftAnalyzer(
    DiagnosticCatalog.ClassNotPartial, DiagnosticCatalog.IncompatibleSettings, DiagnosticCatalog.DuplicateAdapterName);
