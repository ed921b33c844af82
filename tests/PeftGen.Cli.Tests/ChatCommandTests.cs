using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tests.Text;
using PeftGen.Tests.TestSupport;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>
/// peftgen chat driven through redirected standard input (several turns, then end of input as Ctrl-D gives), and
/// generate --chat-format/--system, which formats one message the same way.
/// </summary>
public class ChatCommandTests
{
    private static string[] Stories(params string[] args) =>
        ["--model", SharedModels.Stories260KCheckpoint!, "--tokenizer", SharedModels.Stories260KTokenizer!, .. args];

    /// <summary>stdout's lines (each reply ends with one newline).</summary>
    private static string[] Lines(string stdout) => (stdout.EndsWith('\n') ? stdout[..^1] : stdout).Split('\n');

    [StoriesFact]
    public void Plain_text_chat_continues_each_line_with_the_conversation_so_far_and_ends_at_end_of_input()
    {
        var (code, stdout, stderr) = CliRunner.RunWithInput("Once upon a time\nThe dog\n\nLily went\n",
            ["chat", .. Stories("--chat-format", "none", "--temperature", "0", "--max-tokens", "40")]);

        Assert.True(code == 0, $"exit {code}: {stderr}");
        // Each reply is what greedy generation gives the whole conversation so far, up to the end of its line.
        using var pretrained = PretrainedModel.Load(SharedModels.Stories260KCheckpoint!, SharedModels.Stories260KTokenizer!);
        var generator = new TextGenerator(pretrained.Model, pretrained.Tokenizer);
        string conversation = "";
        var expected = new List<string>();
        foreach (var message in new[] { "Once upon a time", "The dog", "Lily went" })
        {
            conversation += (conversation.Length > 0 ? "\n" : "") + message;
            string all = generator.Generate(conversation, SamplingOptions.Greedy(40));
            Assert.StartsWith(conversation, all);
            string reply = all[conversation.Length..];
            if (reply.IndexOf('\n') is int newline and >= 0) reply = reply[..newline];
            reply = reply.TrimEnd();
            conversation += reply;
            expected.Add(reply.Trim());
        }
        Assert.Equal(expected, Lines(stdout));
        Assert.All(expected, r => Assert.NotEqual("", r));
        Assert.Equal(3, stderr.Split('\n').Count(l => l.StartsWith('[') && l.Contains("context tokens")));
        Assert.Contains("chat: none format (from --chat-format), context 512 tokens", stderr);
    }

    [StoriesFact]
    public void Generate_with_a_chat_format_and_a_system_prompt_prints_the_reply_chat_gives_to_the_same_message()
    {
        string[] settings = ["--chat-format", "chatml", "--system", "You tell short stories.", "--temperature", "0", "--max-tokens", "30"];
        var chat = CliRunner.RunWithInput("Tell me about a cat\n", ["chat", .. Stories(settings)]);
        Assert.True(chat.Code == 0, $"exit {chat.Code}: {chat.Stderr}");
        var generate = CliRunner.Run(["generate", .. Stories([.. settings, "--prompt", "Tell me about a cat"])]);
        Assert.True(generate.Code == 0, $"exit {generate.Code}: {generate.Stderr}");

        Assert.Equal(chat.Stdout, generate.Stdout);
        Assert.DoesNotContain("<|im_", generate.Stdout);
        Assert.DoesNotContain("Tell me about a cat", generate.Stdout); // only the reply, not the rendered prompt
    }

    [StoriesFact]
    public void Cancelling_a_reply_keeps_what_was_written_and_the_session_goes_on()
    {
        int tokens = 0;
        ChatCommand.OnTokenForTests = _ =>
        {
            if (++tokens == 5) ChatCommand.CancelCurrentReply(); // what Ctrl-C does while a reply is written
        };
        (int Code, string Stdout, string Stderr) run;
        try
        {
            run = CliRunner.RunWithInput("Once upon a time\nThe dog\n", ["chat", .. Stories("--chat-format", "none", "--temperature", "0", "--max-tokens", "20")]);
        }
        finally
        {
            ChatCommand.OnTokenForTests = null;
        }

        Assert.True(run.Code == 0, $"exit {run.Code}: {run.Stderr}");
        using var pretrained = PretrainedModel.Load(SharedModels.Stories260KCheckpoint!, SharedModels.Stories260KTokenizer!);
        string first = new TextGenerator(pretrained.Model, pretrained.Tokenizer).Generate("Once upon a time", SamplingOptions.Greedy(5))["Once upon a time".Length..];
        var lines = Lines(run.Stdout);
        Assert.Equal(2, lines.Length);
        Assert.Equal(first.Trim(), lines[0]);
        Assert.Contains("[stopped after 5 tokens", run.Stderr);
        Assert.Single(run.Stderr.Split('\n'), l => l.StartsWith("[stopped", StringComparison.Ordinal));
        Assert.NotEqual("", lines[1]);
    }

    [Fact]
    public void History_is_kept_within_the_context_by_dropping_the_oldest_turns()
    {
        using var root = CliRunner.TempFolder("chat-context");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        // The tiny model's context is 64 tokens and its tokenizer spells one character per token.
        string input = string.Concat(Enumerable.Range(1, 6).Select(i => $"message number {i}\n"))
            + new string('x', 80) + "\n" // longer than the context: refused, and the session goes on
            + "last one\n";
        var (code, stdout, stderr) = CliRunner.RunWithInput(input, "chat", "--model", model, "--chat-format", "none", "--max-tokens", "8", "--temperature", "0");

        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Equal(7, Lines(stdout).Length); // one line per reply (plain text replies end at a newline)
        Assert.Contains("oldest turn", stderr);
        Assert.Contains("the context holds 64: write a shorter one", stderr);
        var used = Regex.Matches(stderr, @"(\d+)/64 context tokens").Select(m => int.Parse(m.Groups[1].Value)).ToList();
        Assert.Equal(7, used.Count);
        Assert.All(used, u => Assert.True(u <= 64, stderr));
    }

    [Fact]
    public void The_format_comes_from_the_tokenizers_chat_template_or_must_be_given()
    {
        using var root = CliRunner.TempFolder("chat-template");
        // A byte-level tokenizer with ChatML's special tokens, and a model of its vocabulary.
        string model = Path.Combine(root, "model");
        using (var llama = new LlamaForCausalLM(CliRunner.TinyConfig with { VocabSize = 267, BosTokenId = 264, EosTokenId = 266 }, seed: 2))
            HuggingFaceLlama.Save(llama, model);
        File.Copy(TestTokenizers.Write(root, TestTokenizers.ByteLevel()), Path.Combine(model, "tokenizer.json"));
        void Config(string template) => File.WriteAllText(Path.Combine(model, "tokenizer_config.json"), new JsonObject
        {
            ["bos_token"] = "<|endoftext|>",
            ["eos_token"] = "<|im_end|>",
            ["chat_template"] = template,
        }.ToJsonString());

        Config("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}");
        var detected = CliRunner.RunWithInput("hello\nthere\n", "chat", "--model", model, "--max-tokens", "6", "--temperature", "0");
        Assert.True(detected.Code == 0, $"exit {detected.Code}: {detected.Stderr}");
        Assert.Contains("chat: chatml format (from the tokenizer's chat_template)", detected.Stderr);
        Assert.Equal(2, detected.Stderr.Split('\n').Count(l => l.Contains("context tokens")));

        Config("{{ messages | tojson }}");
        var unknown = CliRunner.RunWithInput("hello\n", "chat", "--model", model);
        Assert.Equal(1, unknown.Code);
        Assert.Contains("none of the formats PeftGen recognises", unknown.Stderr);
        Assert.Contains("--chat-format", unknown.Stderr);
        var named = CliRunner.RunWithInput("hello\n", "chat", "--model", model, "--chat-format", "llama3", "--max-tokens", "4");
        Assert.True(named.Code == 0, $"exit {named.Code}: {named.Stderr}");
        Assert.Contains("chat: llama3 format (from --chat-format)", named.Stderr);
    }

    [Fact]
    public void Without_a_chat_template_chat_and_generate_system_ask_for_the_format()
    {
        using var root = CliRunner.TempFolder("chat-no-template");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        foreach (var run in new[]
        {
            CliRunner.RunWithInput("hello\n", "chat", "--model", model),
            CliRunner.Run("generate", "--model", model, "--system", "Be brief.", "--prompt", "hi"),
        })
        {
            Assert.True(run.Code == 1, $"exit {run.Code}: {run.Stderr}");
            Assert.Contains("llama2.c tokenizer, which carries no chat template: give --chat-format", run.Stderr);
            Assert.Equal("", run.Stdout);
        }
        var bad = CliRunner.Run("generate", "--model", model, "--chat-format", "zephyr", "--prompt", "hi");
        Assert.Equal(1, bad.Code);
        Assert.Contains("--chat-format zephyr: unknown chat format", bad.Stderr);
        var usage = CliRunner.RunWithInput("", "chat", "--model", model, "--max-tokens", "0", "--chat-format", "none");
        Assert.Equal(1, usage.Code);
        Assert.Contains("--max-tokens", usage.Stderr);
    }
}
