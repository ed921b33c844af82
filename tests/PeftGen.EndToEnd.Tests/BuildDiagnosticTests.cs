using PeftGen.EndToEnd.Tests.TestSupport;

namespace PeftGen.EndToEnd.Tests;

/// <summary>What a user sees in <c>dotnet build</c>: the analyzers' diagnostics fail the build, and fixing the code fixes it.</summary>
[Collection(EndToEndCollection.Name)]
public sealed class BuildDiagnosticTests(PackageFeedFixture fixture)
{
    [Fact]
    public void MisspelledTargetFailsTheBuildWithPeft006AndTheFixedProjectTrains()
    {
        string folder = fixture.NewFolder("diagnostics-consumer");
        Consumer.Write(folder, $"""
              <ItemGroup>
                {RepositoryBuild.ProjectReference("src/Runtime/PeftGen.Runtime.csproj")}
                {RepositoryBuild.ProjectReference("src/Generator/PeftGen.Generator.csproj", "OutputItemType=\"Analyzer\" ReferenceOutputAssembly=\"false\"")}
                {RepositoryBuild.ProjectReference("src/Analyzers/PeftGen.Analyzers.csproj", "OutputItemType=\"Analyzer\" ReferenceOutputAssembly=\"false\"")}
              </ItemGroup>
            """, targets: "q_prj,v_proj");
        // In the repository's configuration its projects are up to date and are not compiled again; they were restored
        // by the build that built them, so only the consumer is restored.
        string[] build = ["build", "-c", RepositoryBuild.Configuration, "-p:RestoreRecursive=false", .. DotNet.NoBuildServers];

        var misspelled = DotNet.Run(folder, build);
        Assert.True(misspelled.ExitCode != 0, misspelled.ToString());
        Assert.Contains("error PEFT006", misspelled.Output);
        Assert.Contains("Did you mean 'q_proj'", misspelled.Output);

        Consumer.SetTargets(folder, "q_proj,v_proj");
        var corrected = DotNet.Run(folder, [.. build, "--no-restore"]);
        Assert.True(corrected.ExitCode == 0, corrected.ToString());

        Consumer.AssertRanOneStep(DotNet.Run(folder, "run", "--no-build", "-c", RepositoryBuild.Configuration), Consumer.QandVTrainableParameters);
    }
}
