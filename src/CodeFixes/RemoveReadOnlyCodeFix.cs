using System.Collections.Immutable;
using System.Composition;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CodeActions;
using Microsoft.CodeAnalysis.CodeFixes;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using PeftGen.Analyzers;

namespace PeftGen.CodeFixes;

/// <summary>
/// Fixes PEFT008 by removing <c>readonly</c> from a layer field that LoRA targets, since the generated
/// <c>ApplyAdapters()</c> assigns the adapter wrapper to that field.
/// </summary>
[ExportCodeFixProvider(LanguageNames.CSharp, Name = nameof(RemoveReadOnlyCodeFix))]
[Shared]
public sealed class RemoveReadOnlyCodeFix : CodeFixProvider
{
    /// <summary>Identifies this fix's actions, so that fix-all groups them.</summary>
    public const string EquivalenceKey = "PeftGen.RemoveReadOnly";

    /// <inheritdoc />
    public override ImmutableArray<string> FixableDiagnosticIds { get; } =
        ImmutableArray.Create(DiagnosticCatalog.ReadOnlyTarget.Id);

    /// <inheritdoc />
    public override FixAllProvider GetFixAllProvider() => WellKnownFixAllProviders.BatchFixer;

    /// <inheritdoc />
    public override async Task RegisterCodeFixesAsync(CodeFixContext context)
    {
        var root = await context.Document.GetSyntaxRootAsync(context.CancellationToken).ConfigureAwait(false);
        if (root == null)
            return;

        foreach (var diagnostic in context.Diagnostics)
        {
            // The analyzer may point at the 'readonly' modifier or at the field's name; both lead to the field.
            var token = root.FindToken(diagnostic.Location.SourceSpan.Start);
            var field = token.Parent?.AncestorsAndSelf().OfType<FieldDeclarationSyntax>().FirstOrDefault();
            if (field == null || !field.Modifiers.Any(SyntaxKind.ReadOnlyKeyword))
                continue;

            var document = context.Document;
            context.RegisterCodeFix(
                CodeAction.Create(
                    $"Remove 'readonly' from '{FieldName(field, token)}'",
                    cancellationToken => RemoveReadOnlyAsync(document, field, cancellationToken),
                    EquivalenceKey),
                diagnostic);
        }
    }

    /// <summary>
    /// The name shown in the title: the declarator the diagnostic points at, else every declarator of the field, as
    /// removing the modifier affects them all.
    /// </summary>
    private static string FieldName(FieldDeclarationSyntax field, SyntaxToken token) =>
        token.Parent is VariableDeclaratorSyntax declarator && declarator.Identifier == token
            ? declarator.Identifier.ValueText
            : string.Join(", ", field.Declaration.Variables.Select(variable => variable.Identifier.ValueText));

    private static async Task<Document> RemoveReadOnlyAsync(Document document, FieldDeclarationSyntax field, CancellationToken cancellationToken)
    {
        var root = await document.GetSyntaxRootAsync(cancellationToken).ConfigureAwait(false);
        if (root == null)
            return document;

        var modifiers = field.Modifiers;
        var index = modifiers.IndexOf(SyntaxKind.ReadOnlyKeyword);
        var readOnly = modifiers[index];
        var newField = field.WithModifiers(modifiers.RemoveAt(index));

        // What precedes 'readonly' (indentation, comments) passes to the token that now takes its place; what follows
        // it is kept too unless it is only the space that separated it from that token.
        var kept = readOnly.LeadingTrivia;
        if (!readOnly.TrailingTrivia.All(trivia => trivia.IsKind(SyntaxKind.WhitespaceTrivia)))
            kept = kept.AddRange(readOnly.TrailingTrivia);
        if (kept.Count > 0)
        {
            var next = index < newField.Modifiers.Count ? newField.Modifiers[index] : newField.Declaration.GetFirstToken();
            newField = newField.ReplaceToken(next, next.WithLeadingTrivia(kept.AddRange(next.LeadingTrivia)));
        }

        return document.WithSyntaxRoot(root.ReplaceNode(field, newField));
    }
}
