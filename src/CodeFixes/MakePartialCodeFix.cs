namespace PeftGen.CodeFixes;

/// <summary>
/// Fixes PEFT001 by adding <c>partial</c> to the adapter class and to every type that contains it: the generator emits
/// its code inside the same chain of type declarations, so each of them must be partial.
/// </summary>
[ExportCodeFixProvider(LanguageNames.CSharp, Name = nameof(MakePartialCodeFix))]
[Shared]
public sealed class MakePartialCodeFix() : PeftCodeFix<TypeDeclarationSyntax>(DiagnosticCatalog.ClassNotPartial, EquivalenceKey)
{
    /// <summary>Identifies this fix's actions, so that fix-all groups them.</summary>
    public const string EquivalenceKey = "PeftGen.MakePartial";

    private protected override bool TryFind(SyntaxNode root, Diagnostic diagnostic, out TypeDeclarationSyntax type)
    {
        type = root.FindToken(diagnostic.Location.SourceSpan.Start).Parent?.AncestorsAndSelf().OfType<TypeDeclarationSyntax>().FirstOrDefault()!;
        return type != null;
    }

    private protected override string Title(TypeDeclarationSyntax type) => $"Make '{type.Identifier.ValueText}' partial";

    private protected override Task<Document> ApplyAsync(Document document, TypeDeclarationSyntax type, CancellationToken cancellationToken)
    {
        var notPartial = type.AncestorsAndSelf().OfType<TypeDeclarationSyntax>()
            .Where(declaration => !declaration.Modifiers.Any(SyntaxKind.PartialKeyword));

        // ReplaceNodes hands each outer type its already-rewritten nested types, so one pass fixes the whole chain.
        return RewriteAsync(document, root => root.ReplaceNodes(notPartial, (_, rewritten) => AddPartial(rewritten)), cancellationToken);
    }

    private static TypeDeclarationSyntax AddPartial(TypeDeclarationSyntax type)
    {
        // 'partial' must come right before the class/struct/record/interface keyword. When that keyword starts the
        // declaration it carries the leading trivia (indentation, doc comment), which then belongs to 'partial'.
        var keyword = type.Keyword;
        var partial = SyntaxFactory.Token(keyword.LeadingTrivia, SyntaxKind.PartialKeyword, SyntaxFactory.TriviaList(SyntaxFactory.Space));
        return type
            .WithKeyword(keyword.WithLeadingTrivia(SyntaxFactory.TriviaList()))
            .WithModifiers(type.Modifiers.Add(partial));
    }
}
