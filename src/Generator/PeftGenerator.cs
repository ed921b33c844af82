using System;
using System.Text;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Generator.Emitting;
using PeftGen.Generator.Methods;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator;

/// <summary>
/// Generates adapter code for <c>partial</c> model classes marked with a method attribute (<c>[LoRA]</c>, <c>[VeRA]</c>,
/// <c>[IA3]</c>, <c>[PromptTuning]</c>, <c>[PrefixTuning]</c>, <c>[PTuning]</c>, <c>[Bottleneck]</c>,
/// <c>[SparseFineTuning]</c>): the method's configuration, <c>ApplyAdapters()</c> returning the runtime's object for that
/// method, the compile-time plan and trainable-parameter count where shapes are known, a <c>CreateTrainer</c> where the
/// method or its companions (<c>[LoRAPlus]</c>, <c>[DeltaLoRA]</c>, <c>[LayerDrop]</c>, <c>[LayerwiseLearningRate]</c>)
/// need trainer wiring, and for LoRA the typed layer walk, adapter parameters, PEFT file keys and PEFT-format
/// <c>SaveAdapter</c>/<c>LoadAdapter</c>, all without reflection; LoRA on a Llama model also gets <c>FromPretrained</c>
/// (4-bit layers quantized while the checkpoint is read) and, with its config.json, <c>EstimateTrainingMemory</c>.
/// Pipeline: <see cref="ModelReader"/> reads the class into an equatable <see cref="ModelSpec"/>, <see cref="ModelPlanner"/>
/// resolves it against config.json additional files with the method's planner, and <see cref="ModelEmitter"/> writes it
/// with the method's emitter; each method is one folder of <c>Methods/</c>, listed in <see cref="MethodCatalog"/>.
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
        var configs = context.AdditionalTextsProvider
            .Where(static file => file.Path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            .Select(static (file, cancellationToken) => ModelConfigReader.Read(file.Path, file.GetText(cancellationToken)?.ToString()))
            .Where(static config => config != null)
            .Select(static (config, _) => config!)
            .Collect()
            .Select(static (found, _) => found.ToEquatableArray())
            .WithTrackingName(Steps.ModelConfigs);

        // One pipeline per method attribute (a class declares one method; its first method attribute generates it).
        foreach (var method in MethodCatalog.All)
        {
            var models = context.SyntaxProvider
                .ForAttributeWithMetadataName(
                    method.AttributeName,
                    static (node, _) => node is ClassDeclarationSyntax,
                    static (syntax, cancellationToken) => ModelReader.Parse(syntax, cancellationToken))
                .Where(static model => model != null)
                .Select(static (model, _) => model!)
                .WithTrackingName(Steps.Models);

            var plans = models
                .Combine(configs)
                .Select(static (pair, _) => ModelPlanner.Plan(pair.Left, pair.Right))
                .WithTrackingName(Steps.Plans);

            context.RegisterSourceOutput(plans, static (output, plan) =>
                output.AddSource(plan.Model.HintName, SourceText.From(ModelEmitter.Emit(plan), Encoding.UTF8)));
        }
    }
}
