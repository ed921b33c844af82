using System;
using System.Text;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Generator.Emitting;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator;

/// <summary>
/// Generates adapter code for <c>partial</c> model classes marked <c>[LoRA]</c>: the adapter configurations, the
/// quantization settings, the LoRA+ ratio, <c>ApplyAdapters()</c> (with run-time rank checks where shapes are not
/// known at compile time), the compile-time adapter plan and PEFT file keys, a typed walk of the linear layers, the
/// adapter parameters, and PEFT-format <c>SaveAdapter</c>/<c>LoadAdapter</c>, all without reflection. Pipeline: parse
/// symbols into an equatable spec, resolve it against config.json additional files, emit text.
/// </summary>
[Generator(LanguageNames.CSharp)]
public sealed class PeftGenerator : IIncrementalGenerator
{
    /// <summary>Tracking names of the pipeline steps (for incrementality tests).</summary>
    public static class Steps
    {
        /// <summary>Annotated classes parsed into specs.</summary>
        public const string Models = nameof(Models);

        /// <summary>config.json additional files read into shape specs.</summary>
        public const string ModelConfigs = nameof(ModelConfigs);

        /// <summary>Specs resolved against the configs, ready to emit.</summary>
        public const string Plans = nameof(Plans);
    }

    /// <inheritdoc />
    public void Initialize(IncrementalGeneratorInitializationContext context)
    {
        var models = context.SyntaxProvider
            .ForAttributeWithMetadataName(
                KnownSymbols.LoRAAttribute,
                static (node, _) => node is ClassDeclarationSyntax,
                static (syntax, cancellationToken) => ModelParser.Parse(syntax, cancellationToken))
            .Where(static model => model != null)
            .Select(static (model, _) => model!)
            .WithTrackingName(Steps.Models);

        var configs = context.AdditionalTextsProvider
            .Where(static file => file.Path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            .Select(static (file, cancellationToken) => ModelConfigReader.Read(file.Path, file.GetText(cancellationToken)?.ToString()))
            .Where(static config => config != null)
            .Select(static (config, _) => config!)
            .Collect()
            .Select(static (found, _) => found.ToEquatableArray())
            .WithTrackingName(Steps.ModelConfigs);

        var plans = models
            .Combine(configs)
            .Select(static (pair, _) => AdapterPlanner.Plan(pair.Left, pair.Right))
            .WithTrackingName(Steps.Plans);

        context.RegisterSourceOutput(plans, static (output, plan) =>
            output.AddSource(plan.Model.HintName, SourceText.From(ModelEmitter.Emit(plan), Encoding.UTF8)));
    }
}
