using System.Collections.Immutable;
using Microsoft.CodeAnalysis.CodeActions;

namespace PeftGen.CodeFixes;

/// <summary>
/// A PeftGen code fix: for each diagnostic of its id it finds what to change (<see cref="TryFind"/>), offers one action
/// titled after it, and applies it (<see cref="ApplyAsync"/>); fix-all batches the actions by their equivalence key.
/// </summary>
/// <typeparam name="TTarget">What the fix changes, found in the document from the diagnostic.</typeparam>
public abstract class PeftCodeFix<TTarget> : CodeFixProvider
{
    private readonly string _equivalenceKey;

    private protected PeftCodeFix(DiagnosticDescriptor fixes, string equivalenceKey)
    {
        FixableDiagnosticIds = ImmutableArray.Create(fixes.Id);
        _equivalenceKey = equivalenceKey;
    }

    /// <inheritdoc />
    public sealed override ImmutableArray<string> FixableDiagnosticIds { get; }

    /// <inheritdoc />
    public sealed override FixAllProvider GetFixAllProvider() => WellKnownFixAllProviders.BatchFixer;

    /// <inheritdoc />
    public sealed override async Task RegisterCodeFixesAsync(CodeFixContext context)
    {
        var root = await context.Document.GetSyntaxRootAsync(context.CancellationToken).ConfigureAwait(false);
        if (root == null)
            return;

        foreach (var diagnostic in context.Diagnostics)
        {
            if (!TryFind(root, diagnostic, out var target))
                continue;

            var document = context.Document;
            context.RegisterCodeFix(
                CodeAction.Create(Title(target), cancellationToken => ApplyAsync(document, target, cancellationToken), _equivalenceKey),
                diagnostic);
        }
    }

    /// <summary>What to change for <paramref name="diagnostic"/>; false when the document offers nothing to fix.</summary>
    private protected abstract bool TryFind(SyntaxNode root, Diagnostic diagnostic, out TTarget target);

    /// <summary>The action's title.</summary>
    private protected abstract string Title(TTarget target);

    /// <summary>The document with <paramref name="target"/> fixed.</summary>
    private protected abstract Task<Document> ApplyAsync(Document document, TTarget target, CancellationToken cancellationToken);

    /// <summary>The document with its syntax root rewritten by <paramref name="rewrite"/>.</summary>
    private protected static async Task<Document> RewriteAsync(Document document, System.Func<SyntaxNode, SyntaxNode> rewrite, CancellationToken cancellationToken)
    {
        var root = await document.GetSyntaxRootAsync(cancellationToken).ConfigureAwait(false);
        return root == null ? document : document.WithSyntaxRoot(rewrite(root));
    }
}
