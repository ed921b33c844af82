using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers;

/// <summary>
/// [ModelConfig] (<see cref="CompanionRules"/>): the named file must be an additional file (PEFT015) that reads as a
/// config.json with the fields the model's shapes need (PEFT016). Without them the generator silently plans nothing at
/// compile time.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class ModelConfigAnalyzer() : PeftAnalyzer(
    DiagnosticCatalog.ModelConfigNotFound, DiagnosticCatalog.InvalidModelConfig);
