using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using PeftGen.Generator.Methods;
using PeftGen.Generator.Parsing;

namespace PeftGen.Analyzers;

/// <summary>
/// The class that carries PeftGen attributes: the companions need a method attribute they work with (PEFT011), an adapter
/// class must be partial (PEFT001), and it declares one method (PEFT019).
/// </summary>
internal static class ClassRules
{
    /// <summary>Why [LayerwiseLearningRate] does not work with prompt learning (the trainer would refuse the decay).</summary>
    private const string PromptEncoderHasNoDepth =
        "prompt learning trains only the virtual tokens' encoder, which lies outside the decoder layers, so there is no depth to scale its learning rate by";

    public static void Check(CheckContext context)
    {
        var declaration = context.Declaration;
        if (declaration.Method is not { } method)
        {
            foreach (var (kind, attribute) in declaration.CompanionAttributes)
            {
                string name = CheckContext.ShortName(attribute);
                context.Report(DiagnosticCatalog.IncompatibleSettings, context.Arguments(attribute).Location, "[" + name + "]", "a class without [LoRA]",
                    Purpose(kind) + "; add a [LoRA(rank, targets)] (or another method) attribute or remove [" + name + "]");
            }
            return;
        }

        // The class's method is its first method attribute; companions that only apply to other methods are errors.
        foreach (var (kind, attribute) in declaration.CompanionAttributes.Where(c => !method.Definition.Supports(c.Kind)))
        {
            string reason = kind == Companion.LayerwiseLearningRate
                ? PromptEncoderHasNoDepth
                : "it applies to " + string.Join(" and ", MethodCatalog.All.Where(m => m.Supports(kind)).Select(m => "[" + m.Name + "]")) + " only";
            context.Report(DiagnosticCatalog.IncompatibleSettings, context.Arguments(attribute).Location,
                "[" + CheckContext.ShortName(attribute) + "]", "[" + method.Definition.Name + "]", reason + "; remove it or change the method");
        }

        foreach (var other in declaration.OtherMethods)
        {
            context.Report(DiagnosticCatalog.MultipleMethods, context.Arguments(other).Location,
                context.Type.Name, method.Definition.Name, CheckContext.ShortName(other));
        }

        // Without a method attribute nothing is generated, so only adapter classes need to be partial.
        if (!context.Type.IsGenericType && !declaration.IsPartial(context.CancellationToken) && Identifier(context) is { } identifier)
            context.Report(DiagnosticCatalog.ClassNotPartial, identifier, context.Type.Name);
    }

    /// <summary>What a companion attribute is for: why it is useless without a method (PEFT011).</summary>
    private static string Purpose(Companion kind) => kind switch
    {
        Companion.Quantize => "it quantizes the layers the adapters target, and there are none",
        Companion.LoRAPlus => "it sets the learning rate of the adapters' B matrices, and there are none",
        Companion.ModelConfig => "it gives the shapes the adapters are checked and planned against, and there are none",
        Companion.DeltaLoRA => "it moves the base weights by the adapters' updates, and there are none",
        Companion.LayerDrop => "it skips decoder layers while a PEFT method trains, and none is declared",
        _ => "it scales the learning rate of a PEFT method's parameters by depth, and none is declared",
    };

    private static Location? Identifier(CheckContext context) =>
        context.Type.DeclaringSyntaxReferences
            .Select(r => r.GetSyntax(context.CancellationToken))
            .OfType<TypeDeclarationSyntax>()
            .Select(d => d.Identifier.GetLocation())
            .FirstOrDefault();
}
