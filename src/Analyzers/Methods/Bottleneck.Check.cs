using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Analyzers;
using static PeftGen.Analyzers.CheckContext;

namespace PeftGen.Generator.Methods;

/// <summary>[Bottleneck]: its width or reduction factor (PEFT022), and against the model's hidden size (PEFT025).</summary>
internal sealed partial class BottleneckMethod
{
    protected override void Check(CheckContext context, BottleneckSpec bottleneck, ImmutableArray<AttributeData> attributes)
    {
        var arguments = context.Arguments(attributes[0]);
        var sizeSyntax = arguments.Constructor("size");
        if (sizeSyntax != null && bottleneck.Size < 1)
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(sizeSyntax), "Bottleneck size", Number(bottleneck.Size), "use a width of at least 1, or leave it out to derive it from ReductionFactor");
        if (bottleneck.Size == 0 && bottleneck.ReductionFactor < 1)
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("ReductionFactor")), "Bottleneck reduction factor", Number(bottleneck.ReductionFactor), "use a factor of at least 1 (16 is the default)");
        if (!context.Declaration.IsLlama || context.Config?.HiddenSize is not int hidden || context.Config.Path is not { } path) return;
        string file = path.Replace('\\', '/').Split('/').Last();
        if (bottleneck.Size > hidden)
            context.Report(DiagnosticCatalog.BottleneckTooWide, arguments.At(sizeSyntax), "Bottleneck size " + Number(bottleneck.Size) + " exceeds the hidden size " + Number(hidden), Number(hidden), file);
        else if (bottleneck.Size == 0 && bottleneck.ReductionFactor > hidden)
            context.Report(DiagnosticCatalog.BottleneckTooWide, arguments.At(arguments.Named("ReductionFactor")),
                "Reduction factor " + Number(bottleneck.ReductionFactor) + " leaves " + Number(hidden) + " / " + Number(bottleneck.ReductionFactor) + " = 0 bottleneck channels", Number(hidden), file);
    }
}
