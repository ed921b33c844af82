using System.Reflection;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers.Tests;

/// <summary>Every diagnostic is reported by an analyzer, documented, and tracked for release.</summary>
public sealed class CatalogTests
{
    private static readonly string RepoRoot = FindRepoRoot();

    public static TheoryData<string> Ids => new(DiagnosticCatalog.All.Select(d => d.Id));

    [Fact]
    public void Ids_are_unique_and_sequential()
    {
        var ids = DiagnosticCatalog.All.Select(d => d.Id).ToList();
        Assert.Equal(Enumerable.Range(1, ids.Count).Select(i => $"PEFT{i:000}"), ids);
    }

    [Fact]
    public void Every_descriptor_is_supported_by_exactly_one_analyzer()
    {
        var supported = typeof(DiagnosticCatalog).Assembly.GetTypes()
            .Where(t => typeof(DiagnosticAnalyzer).IsAssignableFrom(t) && !t.IsAbstract)
            .SelectMany(t => ((DiagnosticAnalyzer)Activator.CreateInstance(t)!).SupportedDiagnostics)
            .Select(d => d.Id)
            .OrderBy(id => id, StringComparer.Ordinal);
        Assert.Equal(DiagnosticCatalog.All.Select(d => d.Id), supported);
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void Has_a_docs_page(string id)
    {
        var descriptor = DiagnosticCatalog.All.Single(d => d.Id == id);
        var page = Path.Combine(RepoRoot, "docs", "diagnostics", id + ".md");
        Assert.True(File.Exists(page), $"{page} is missing");
        var text = File.ReadAllText(page);
        Assert.StartsWith($"# {id}: {descriptor.Title}", text, StringComparison.Ordinal);
        Assert.Contains(descriptor.DefaultSeverity.ToString(), text, StringComparison.Ordinal);
        Assert.EndsWith(id + ".md", descriptor.HelpLinkUri, StringComparison.Ordinal);
        Assert.Contains($"({id}.md)", File.ReadAllText(Path.Combine(RepoRoot, "docs", "diagnostics", "README.md")), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void Has_a_release_tracking_row(string id)
    {
        var descriptor = DiagnosticCatalog.All.Single(d => d.Id == id);
        var unshipped = File.ReadAllText(Path.Combine(RepoRoot, "src", "Analyzers", "AnalyzerReleases.Unshipped.md"));
        var row = $@"^{id}\s*\|\s*{Regex.Escape(descriptor.Category)}\s*\|\s*{descriptor.DefaultSeverity}\s*\|";
        Assert.Matches(new Regex(row, RegexOptions.Multiline), unshipped);
    }

    /// <summary>The folder with PeftGen.sln above the test binaries, or above this project when they are built elsewhere.</summary>
    private static string FindRepoRoot()
    {
        var projectDirectory = typeof(CatalogTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "ProjectDirectory").Value!;
        foreach (var start in new[] { AppContext.BaseDirectory, projectDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "PeftGen.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException($"PeftGen.sln not found above {AppContext.BaseDirectory} or {projectDirectory}");
    }
}
