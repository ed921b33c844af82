namespace PeftGen.CodeFixes;

/// <summary>
/// Fixes PEFT008 by removing <c>readonly</c> from a layer field that LoRA targets, since the generated
/// <c>ApplyAdapters()</c> assigns the adapter wrapper to that field.
/// </summary>
[ExportCodeFixProvider(LanguageNames.CSharp, Name = nameof(RemoveReadOnlyCodeFix))]
[Shared]
public sealed class RemoveReadOnlyCodeFix() : PeftCodeFix<(FieldDeclarationSyntax Field, SyntaxToken Token)>(DiagnosticCatalog.ReadOnlyTarget, EquivalenceKey)
{
    /// <summary>Identifies this fix's actions, so that fix-all groups them.</summary>
    public const string EquivalenceKey = "PeftGen.RemoveReadOnly";

    /// <summary>The field to fix, and the token the diagnostic points at: the <c>readonly</c> modifier or a declarator's name.</summary>
    private protected override bool TryFind(SyntaxNode root, Diagnostic diagnostic, out (FieldDeclarationSyntax Field, SyntaxToken Token) target)
    {
        // The analyzer may point at the 'readonly' modifier or at the field's name; both lead to the field.
        var token = root.FindToken(diagnostic.Location.SourceSpan.Start);
        var field = token.Parent?.AncestorsAndSelf().OfType<FieldDeclarationSyntax>().FirstOrDefault();
        target = (field!, token);
        return field != null && field.Modifiers.Any(SyntaxKind.ReadOnlyKeyword);
    }

    /// <summary>
    /// The title names the declarator the diagnostic points at, else every declarator of the field, as removing the
    /// modifier affects them all.
    /// </summary>
    private protected override string Title((FieldDeclarationSyntax Field, SyntaxToken Token) target) =>
        "Remove 'readonly' from '" + (target.Token.Parent is VariableDeclaratorSyntax declarator && declarator.Identifier == target.Token
            ? declarator.Identifier.ValueText
            : string.Join(", ", target.Field.Declaration.Variables.Select(variable => variable.Identifier.ValueText))) + "'";

    private protected override Task<Document> ApplyAsync(Document document, (FieldDeclarationSyntax Field, SyntaxToken Token) target, CancellationToken cancellationToken)
    {
        var field = target.Field;
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

        return RewriteAsync(document, root => root.ReplaceNode(field, newField), cancellationToken);
    }
}
