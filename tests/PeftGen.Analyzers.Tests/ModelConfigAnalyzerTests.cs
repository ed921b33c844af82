using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

public sealed class ModelConfigAnalyzerTests
{
    private static string Model(string path) => Sources.Llama($$"""
        [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
        [ModelConfig({{path}})]
        """);

    [Fact]
    public Task PEFT015_when_no_additional_file_matches() =>
        PeftAnalyzerTest.VerifyAsync(Model("""{|PEFT015:"models/tiny/config.json"|}"""), ("/repo/models/small/config.json", Sources.TinyConfig));

    [Theory]
    [InlineData("config.json")]
    [InlineData("tiny/config.json")]
    [InlineData("./tiny/config.json")]
    [InlineData("/repo/models/tiny/config.json")]
    public Task No_PEFT015_when_the_path_or_its_last_segments_match(string path) =>
        PeftAnalyzerTest.VerifyAsync(Model("\"" + path + "\""), ("/repo/models/tiny/config.json", Sources.TinyConfig));

    [Fact]
    public Task PEFT016_when_the_file_is_not_a_json_object() =>
        PeftAnalyzerTest.VerifyAsync(Model("""{|PEFT016:"config.json"|}"""), ("/repo/config.json", "hidden_size: 64"));

    [Fact]
    public async Task PEFT016_when_fields_the_shapes_need_are_missing()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(
            Model("""{|PEFT016:"config.json"|}"""),
            ("/repo/config.json", Sources.TinyConfig.Replace("\"hidden_size\": 64,", "").Replace("\"vocab_size\": 512", "\"vocab_size\": 0")));
        Assert.Contains("hidden_size, vocab_size", Assert.Single(diagnostics).GetMessage());
    }

    [Fact]
    public Task PEFT016_when_the_path_matches_several_files() =>
        PeftAnalyzerTest.VerifyAsync(Model("""{|PEFT016:"config.json"|}"""),
            ("/repo/a/config.json", Sources.TinyConfig), ("/repo/b/config.json", Sources.TinyConfig));
}
