using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Analyzers.Tests.TestSupport;
using PeftGen.Testing;

namespace PeftGen.Analyzers.Tests;

/// <summary>
/// The per-compilation state the six analyzers share: one instance per compilation and options, one analysis per model.
/// These tests hold compilations and analyzer options themselves (no analyzer runs), so they build them directly.
/// </summary>
public sealed class PeftCompilationTests
{
    private const string Config = """
        { "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 3, "num_attention_heads": 8,
          "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 128 }
        """;

    private static readonly string Source = Sources.Llama("""
        [LoRA(rank: 8, targets: "all-linear")]
        [ModelConfig("config.json")]
        """);

    [Fact]
    public void Analyzers_of_one_compilation_share_its_state_and_each_models_analysis()
    {
        var compilation = Compile(Source);
        var options = Options(("/src/config.json", Config));
        var first = PeftCompilation.From(compilation, options)!;
        var chat = compilation.GetTypeByMetadataName("Chat")!;

        Assert.Same(first, PeftCompilation.From(compilation, options));
        var model = first.Model(chat, CancellationToken.None);
        Assert.NotNull(model);
        Assert.Same(model, first.Model(chat, CancellationToken.None));
        // The shared analysis is the one an analyzer would make itself: 3 layers × 7 projections planned.
        Assert.Equal(ModelAnalysis.Create(chat, first, CancellationToken.None)!.Plan, model!.Plan);
        Assert.Equal(21, ((PeftGen.Generator.Methods.LoRAPlan)model.Plan!.Method).Adapters[0].Plan!.Value.Count);
    }

    [Fact]
    public void Other_options_or_another_compilation_get_state_of_their_own()
    {
        var compilation = Compile(Source);
        var withConfig = PeftCompilation.From(compilation, Options(("/src/config.json", Config)))!;
        var withoutConfig = PeftCompilation.From(compilation, Options())!;
        Assert.NotSame(withConfig, withoutConfig);
        Assert.Single(withConfig.Configs(CancellationToken.None));
        Assert.Empty(withoutConfig.Configs(CancellationToken.None));

        var edited = compilation.AddSyntaxTrees(CSharpSyntaxTree.ParseText("class Other { }"));
        Assert.NotSame(withConfig, PeftCompilation.From(edited, Options(("/src/config.json", Config))));
    }

    [Fact]
    public void A_compilation_without_the_runtime_has_no_state()
    {
        var plain = CSharpCompilation.Create("Plain",
            [CSharpSyntaxTree.ParseText("class C { }")],
            [MetadataReference.CreateFromFile(typeof(object).Assembly.Location)]);
        Assert.Null(PeftCompilation.From(plain, Options()));
    }

    private static CSharpCompilation Compile(string source) =>
        CSharpCompilation.Create("Consumer", [CSharpSyntaxTree.ParseText(source, path: "Source0.cs")], ConsumerReferences.All,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));

    private static AnalyzerOptions Options(params (string Path, string Text)[] additionalFiles) =>
        new(additionalFiles.Select(f => (AdditionalText)new InMemoryAdditionalText(f.Path, f.Text)).ToImmutableArray());

    private sealed class InMemoryAdditionalText(string path, string text) : AdditionalText
    {
        private readonly SourceText _text = SourceText.From(text);

        public override string Path { get; } = path;

        public override SourceText GetText(CancellationToken cancellationToken = default) => _text;
    }
}
