using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// A method's targets against the model's layers, with the runtime's rules (<see cref="TargetMatcher"/>): a list entry
/// must match a linear layer (PEFT006, with a suggestion, or PEFT007 when it names another module), a regex must be valid
/// (PEFT017), and QLoRA should adapt more than q and v (PEFT014).
/// </summary>
internal static class TargetRules
{
    private static readonly HashSet<string> AttentionQueryValue = new(StringComparer.Ordinal) { "q_proj", "v_proj" };

    /// <summary>Checks <paramref name="targets"/>, written as <paramref name="syntax"/> in the attribute of <paramref name="arguments"/>.</summary>
    /// <param name="context">The class.</param>
    /// <param name="method">The method as the messages name it ("LoRA", "VeRA", "IA3" or "Sparse fine-tuning").</param>
    /// <param name="targets">The targets.</param>
    /// <param name="syntax">Their expression, or null when not written.</param>
    /// <param name="arguments">The attribute.</param>
    /// <param name="quantized">The layers are stored in 4 bits (QLoRA).</param>
    /// <param name="tree">The model's modules, or null to leave list entries unchecked.</param>
    public static void Check(CheckContext context, string method, TargetSpec targets, ExpressionSyntax? syntax, AttributeArguments arguments,
        bool quantized, ModuleWalker? tree)
    {
        var at = arguments.At(syntax);
        switch (targets.Kind)
        {
            case TargetKind.Invalid:
                context.Report(DiagnosticCatalog.UnknownTarget, at, method, targets.Text, context.Type.Name,
                    " Name at least one layer, e.g. \"q_proj,v_proj\", or use \"all-linear\".");
                return;
            case TargetKind.Regex:
                try
                {
                    _ = new Regex(targets.Text);
                }
                catch (ArgumentException e)
                {
                    context.Report(DiagnosticCatalog.InvalidTargetRegex, at, method, targets.Text, e.Message);
                }
                return;
            case TargetKind.List:
                if (quantized && targets.Names.All(n => AttentionQueryValue.Contains(LeafName(n))))
                    context.Report(DiagnosticCatalog.QLoRAOnFewTargets, at, string.Join(", ", targets.Names));
                if (tree is { IsComplete: true }) CheckNames(context, method, targets, syntax, at, tree);
                return;
        }
    }

    private static void CheckNames(CheckContext context, string method, TargetSpec targets, ExpressionSyntax? syntax, Location at, ModuleWalker tree)
    {
        var leafNames = tree.Linears.Select(n => LeafName(n.Path)).Distinct(StringComparer.Ordinal).ToList();
        foreach (var name in targets.Names)
        {
            if (tree.Linears.Any(n => TargetMatcher.MayMatchName(n.Path, name))) continue;
            var entry = EntryLocation(syntax, name);
            if (tree.Nodes.FirstOrDefault(n => TargetMatcher.MayMatchName(n.Path, name)) is { } module)
            {
                context.Report(DiagnosticCatalog.TargetNotLinear, entry ?? at, method, name, module.Path, module.Type.Name);
                continue;
            }
            var suggestion = Suggestions.Closest(name, leafNames);
            string hint = (suggestion != null ? " Did you mean '" + suggestion + "'?" : "")
                + (leafNames.Count > 0 ? " Linear layers here: " + string.Join(", ", leafNames) + "." : " It has no linear layers.");
            // The code fix finds the entry in the literal's source text by the Target property and puts the suggestion there.
            var properties = ImmutableDictionary<string, string?>.Empty.Add(DiagnosticCatalog.TargetProperty, name);
            if (suggestion != null) properties = properties.Add(DiagnosticCatalog.SuggestionProperty, suggestion);
            context.Report(DiagnosticCatalog.UnknownTarget, entry ?? at, properties, method, name, context.Type.Name, hint);
        }
    }

    private static string LeafName(string path) => path.Substring(path.LastIndexOf('.') + 1);

    /// <summary>
    /// The location of list entry <paramref name="name"/> inside the targets expression, when the expression is a
    /// string literal whose characters map one to one onto its value (no escapes); otherwise null.
    /// </summary>
    public static Location? EntryLocation(ExpressionSyntax? expression, string name)
    {
        if (expression is not LiteralExpressionSyntax { Token: var token } || !token.IsKind(SyntaxKind.StringLiteralToken)) return null;
        string value = token.ValueText, text = token.Text;
        int opening = text.StartsWith("@\"", StringComparison.Ordinal) ? 2 : text.StartsWith("\"", StringComparison.Ordinal) ? 1 : -1;
        if (opening < 0 || text.Length != value.Length + opening + 1) return null;
        int start = 0;
        foreach (var part in value.Split(','))
        {
            string trimmed = part.Trim();
            if (trimmed == name)
            {
                int at = start + part.IndexOf(trimmed, StringComparison.Ordinal);
                return Location.Create(expression.SyntaxTree, new TextSpan(token.SpanStart + opening + at, name.Length));
            }
            start += part.Length + 1;
        }
        return null;
    }
}
