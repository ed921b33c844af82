using PeftGen.Text;
using Xunit;

namespace PeftGen.Tests.Text;

public sealed class ChatFormatTests
{
    private static readonly ChatMessage[] Conversation =
    [
        new("system", "You are helpful."),
        new("user", "Hi"),
        new("assistant", "Hello!"),
    ];

    [Theory]
    [InlineData("chatml",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
        "Hello!<|im_end|>")]
    [InlineData("llama3",
        "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
        "Hello!<|eot_id|>")]
    [InlineData("llama2", "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST] Hello! </s>", " Hello! </s>")]
    [InlineData("mistral", "[INST] You are helpful.\n\nHi [/INST]Hello!</s>", "Hello!</s>")]
    [InlineData("alpaca", "You are helpful.\n\n### Instruction:\nHi\n\n### Response:\nHello!", "Hello!")]
    public void Render_ThreeMessages(string name, string expected, string assistantPart)
    {
        var rendering = ChatFormat.Get(name).Render(Conversation, addGenerationPrompt: false);

        Assert.Equal(expected, rendering.Text);
        var span = Assert.Single(rendering.AssistantSpans);
        Assert.Equal(assistantPart, rendering.Text.Substring(span.Start, span.Length));
        Assert.Equal(rendering.Text.Length, span.End + (name == "chatml" ? 1 : 0));
    }

    [Fact]
    public void Render_MultiTurnSpansAndGenerationPrompt()
    {
        ChatMessage[] messages = [new("user", "a"), new("assistant", "b"), new("user", "c"), new("assistant", "d")];

        var llama2 = ChatFormat.Llama2.Render(messages, addGenerationPrompt: false);
        Assert.Equal("[INST] a [/INST] b </s><s>[INST] c [/INST] d </s>", llama2.Text);
        Assert.Equal([" b </s>", " d </s>"], llama2.AssistantSpans.Select(s => llama2.Text.Substring(s.Start, s.Length)));

        var chatml = ChatFormat.ChatML.Render(messages[..1], addGenerationPrompt: true);
        Assert.Equal("<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n", chatml.Text);
        Assert.Empty(chatml.AssistantSpans);

        var alpaca = ChatFormat.Alpaca.Render([new("user", "Sum"), new("input", "1 2"), new("assistant", "3")], false);
        Assert.StartsWith("Below is an instruction that describes a task, paired with an input", alpaca.Text);
        Assert.EndsWith("### Instruction:\nSum\n\n### Input:\n1 2\n\n### Response:\n3", alpaca.Text);
    }

    [Theory]
    [InlineData("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}", "chatml")]
    [InlineData("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>{% endfor %}", "llama3")]
    [InlineData("{% if system %}<<SYS>>\\n{{ system }}\\n<</SYS>>{% endif %}[INST] {{ content }} [/INST]", "llama2")]
    [InlineData("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}", "mistral")]
    [InlineData("### Instruction:\\n{{ instruction }}", "alpaca")]
    public void Detect_RecognisesFamilies(string template, string expected) =>
        Assert.Equal(expected, ChatFormat.Detect(template)?.Name);

    [Fact]
    public void Detect_UnknownIsNull_GetUnknownThrows()
    {
        Assert.Null(ChatFormat.Detect("{{ messages }}"));
        var e = Assert.Throws<ArgumentException>(() => ChatFormat.Get("vicuna"));
        Assert.Contains("chatml", e.Message);
        Assert.Same(ChatFormat.Llama3, ChatFormat.Get("LLAMA3"));
    }

    [Fact]
    public void Render_RejectsMisplacedSystemAndUnknownRoles()
    {
        Assert.Throws<ArgumentException>(() => ChatFormat.ChatML.Render([new("user", "a"), new("system", "b")], false));
        Assert.Throws<ArgumentException>(() => ChatFormat.Mistral.Render([new("tool", "a")], false));
    }
}
