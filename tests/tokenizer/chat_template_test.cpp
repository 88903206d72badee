// Chat template families. Each template below is the public template (or the lines of it that
// render plain system/user/assistant messages; tool-calling branches left out) of the model named
// in its comment; each expected string was worked out by hand by rendering that template the way
// Jinja does in transformers' apply_chat_template (trim_blocks and lstrip_blocks on).
#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace lockstep::tokenizer {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
};
const std::vector<ChatMessage> kNoSystem(kConversation.begin() + 1, kConversation.end());

// HuggingFaceTB/SmolLM2-135M-Instruct tokenizer_config.json (also in the model's GGUF).
const std::string kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

// Qwen/Qwen2.5-7B-Instruct tokenizer_config.json (escapes as stored: "\\n" is Jinja's \n).
const std::string kQwen25 =
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == "
    "'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- "
    "'<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages "
    "%}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) "
    "or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' "
    "+ message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n"
    "{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n";

// meta-llama/Llama-2-7b-chat-hf tokenizer_config.json
const std::string kLlama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
    "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
    "endfor %}";

// meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json
const std::string kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
    "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// mistralai/Mistral-7B-Instruct-v0.2 ("v1" template, with system prompt support).
const std::string kMistralV1 =
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = "
    "messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- "
    "set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in "
    "loop_messages %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and "
    "system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + "
    "message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + "
    "message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == "
    "'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- endif %}\n{%- "
    "endfor %}\n";

// mistralai/Mistral-7B-Instruct-v0.3 ("v3"): the rendering lines, tool branches left out.
const std::string kMistralV3 =
    "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = "
    "messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    "
    "{%- set loop_messages = messages %}\n{%- endif %}\n{{- bos_token }}\n{%- for message in "
    "loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not "
    "none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n    "
    "        {{- \"[/AVAILABLE_TOOLS]\" }}\n        {%- endif %}\n        {%- if loop.last and "
    "system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + "
    "message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + "
    "message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message[\"role\"] "
    "== \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- "
    "endif %}\n{%- endfor %}\n";

// mistralai/Mistral-Nemo-Instruct-2407 ("v3-tekken"): as v3 without the spaces.
const std::string kMistralTekken =
    "{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == "
    "\"user\" %}\n        {%- if loop.last and system_message is defined %}\n            {{- "
    "\"[INST]\" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- "
    "else %}\n            {{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n        {%- "
    "endif "
    "%}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- message[\"content\"] + "
    "eos_token}}\n    {%- endif %}\n{%- endfor %}\n";

// HuggingFaceH4/zephyr-7b-beta tokenizer_config.json
const std::string kZephyr =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' "
    "+ message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
    "'<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

// microsoft/Phi-3-small-8k-instruct tokenizer_config.json
const std::string kPhi3Small =
    "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + "
    "message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

// microsoft/Phi-3-mini-4k-instruct (original release)
const std::string kPhi3Mini =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' "
    "+ '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif "
    "(message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% "
    "endfor %}";

TEST(ChatTemplate, ChatMLSmolLM2) {
  const auto t = ChatTemplate::detect(kSmolLM2);
  EXPECT_EQ(t.family(), ChatFamily::kChatML);
  EXPECT_FALSE(t.fell_back());
  EXPECT_EQ(t.apply(kConversation, true),
            "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n"
            "<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n");
  // Without a system message the template writes its own.
  EXPECT_EQ(t.apply(kNoSystem, false),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi "
            "there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n");
}

TEST(ChatTemplate, ChatMLQwen25DefaultSystem) {
  const auto t = ChatTemplate::detect(kQwen25);
  EXPECT_EQ(t.family(), ChatFamily::kChatML);
  EXPECT_EQ(t.default_system(),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(t.apply({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, ChatMLIsTheDefault) {
  testing::internal::CaptureStderr();
  const auto t = ChatTemplate::detect("");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(t.family(), ChatFamily::kChatML);
  EXPECT_FALSE(t.fell_back());
  EXPECT_EQ(t.apply({{"user", "Hi"}}, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, UnparseableAndUnrecognisedFallsBackToChatMLWithOneWarning) {
  testing::internal::CaptureStderr();
  const auto t = ChatTemplate::detect("{% for m in messages %}{{ m.content }}");  // no endfor
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(t.family(), ChatFamily::kChatML);
  EXPECT_TRUE(t.fell_back());
  EXPECT_FALSE(t.uses_jinja());
  EXPECT_NE(err.find("warning"), std::string::npos);
  EXPECT_NE(err.find("does not parse"), std::string::npos);
  EXPECT_NE(err.find("endfor"), std::string::npos);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1);
  EXPECT_EQ(t.apply({{"user", "Hi"}}, false), "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplate, UnparseableFallsBackToTheFamilyItResembles) {
  testing::internal::CaptureStderr();
  const auto t = ChatTemplate::detect(kLlama3 + "{% if %}", "<|begin_of_text|>");
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1);
  EXPECT_NE(err.find("llama3"), std::string::npos);
  EXPECT_FALSE(t.uses_jinja());
  EXPECT_FALSE(t.fell_back());
  EXPECT_EQ(t.apply({{"user", " Hi "}}, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, UnrecognisedTemplateRendersAsWritten) {
  testing::internal::CaptureStderr();
  const auto t = ChatTemplate::detect(
      "{% for m in messages %}{{ m.role }}: {{ m.content }}\n"
      "{% endfor %}{% if add_generation_prompt %}bot:{% endif %}");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(t.uses_jinja());
  EXPECT_FALSE(t.fell_back());
  EXPECT_EQ(t.name(), "jinja");
  EXPECT_EQ(t.apply({{"user", "Hi"}, {"assistant", "Yo"}}, true), "user: Hi\nassistant: Yo\nbot:");
}

TEST(ChatTemplate, TemplateErrorsAreOneLineInputErrors) {
  const auto t = ChatTemplate::detect(
      "{% if messages[0].role == 'system' %}{{ raise_exception('No system\nplease') }}{% endif %}");
  try {
    t.apply(kConversation, true);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_NE(what.find("No system"), std::string::npos) << what;
  }
  EXPECT_EQ(t.apply(kNoSystem, true), "");
}

// The hand-written families render what the published templates render (the Jinja path).
TEST(ChatTemplate, BuiltinFamiliesAgreeWithTheTemplates) {
  struct Case {
    const std::string* src;
    const char* bos;
    const char* eos;
  };
  const Case cases[] = {{&kSmolLM2, "", ""},
                        {&kQwen25, "", ""},
                        {&kLlama2, "<s>", "</s>"},
                        {&kLlama3, "<|begin_of_text|>", ""},
                        {&kMistralV1, "<s>", "</s>"},
                        {&kZephyr, "<s>", "</s>"},
                        {&kPhi3Small, "<|endoftext|>", "<|endoftext|>"},
                        {&kPhi3Mini, "<s>", "<|endoftext|>"}};
  for (const Case& c : cases) {
    const auto jinja = ChatTemplate::detect(*c.src, c.bos, c.eos);
    const auto builtin = ChatTemplate::builtin(*c.src, c.bos, c.eos);
    ASSERT_TRUE(jinja.uses_jinja());
    ASSERT_FALSE(builtin.uses_jinja());
    for (const auto* conv : {&kConversation, &kNoSystem}) {
      for (bool gen : {false, true}) {
        const RenderedChat a = jinja.render(*conv, gen), b = builtin.render(*conv, gen);
        EXPECT_EQ(a.text, b.text) << builtin.name();
      }
    }
  }
}

TEST(ChatTemplate, Llama2) {
  const auto t = ChatTemplate::detect(kLlama2, "<s>", "</s>");
  EXPECT_EQ(t.family(), ChatFamily::kLlama2);
  EXPECT_EQ(t.apply(kConversation, true),
            "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there "
            "</s><s>[INST] Who are you [/INST]");
  // content.strip() trims each message.
  EXPECT_EQ(t.apply({{"user", "  Hi \n"}, {"assistant", " ok "}}, false),
            "<s>[INST] Hi [/INST] ok </s>");
}

TEST(ChatTemplate, Llama3) {
  const auto t = ChatTemplate::detect(kLlama3, "<|begin_of_text|>", "<|end_of_text|>");
  EXPECT_EQ(t.family(), ChatFamily::kLlama3);
  EXPECT_EQ(t.apply(kConversation, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
            "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t.apply({{"user", " Hi\n"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplate, MistralV1) {
  const auto t = ChatTemplate::detect(kMistralV1, "<s>", "</s>");
  EXPECT_EQ(t.family(), ChatFamily::kMistral);
  EXPECT_EQ(t.name(), "mistral-v1");
  EXPECT_EQ(t.apply(kConversation, true),
            "<s> [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are "
            "you [/INST]");
}

TEST(ChatTemplate, MistralV3PutsSystemIntoTheLastUserTurn) {
  // An excerpt of the template (the rendering lines): the hand-written family renders it.
  const auto t = ChatTemplate::builtin(kMistralV3, "<s>", "</s>");
  EXPECT_EQ(t.name(), "mistral-v3");
  std::vector<ChatMessage> conv = kConversation;
  conv[2].content = "  Hi there  ";  // |trim
  EXPECT_EQ(t.apply(conv, true),
            "<s>[INST] Hello[/INST] Hi there</s>[INST] You are a helpful assistant\n\nWho are "
            "you[/INST]");
}

TEST(ChatTemplate, MistralTekken) {
  const auto t = ChatTemplate::builtin(kMistralTekken, "<s>", "</s>");
  EXPECT_EQ(t.name(), "mistral-v3-tekken");
  EXPECT_EQ(t.apply(kConversation, true),
            "<s>[INST]Hello[/INST]Hi there</s>[INST]You are a helpful assistant\n\nWho are "
            "you[/INST]");
}

TEST(ChatTemplate, Zephyr) {
  const auto t = ChatTemplate::detect(kZephyr, "<s>", "</s>");
  EXPECT_EQ(t.family(), ChatFamily::kZephyr);
  EXPECT_EQ(t.apply(kConversation, true),
            "<|system|>\nYou are a helpful assistant</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi "
            "there</s>\n<|user|>\nWho are you</s>\n<|assistant|>\n");
  EXPECT_EQ(t.apply({{"user", "Hi"}}, false), "<|user|>\nHi</s>\n");
}

TEST(ChatTemplate, Phi3) {
  const auto t = ChatTemplate::detect(kPhi3Small, "<|endoftext|>", "<|endoftext|>");
  EXPECT_EQ(t.family(), ChatFamily::kPhi3);
  EXPECT_EQ(t.apply(kConversation, true),
            "<|endoftext|><|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n"
            "<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n");
  EXPECT_EQ(t.apply({{"user", "Hi"}}, false), "<|endoftext|><|user|>\nHi<|end|>\n<|endoftext|>");
}

TEST(ChatTemplate, Phi3Mini) {
  const auto t = ChatTemplate::detect(kPhi3Mini, "<s>", "<|endoftext|>");
  EXPECT_EQ(t.family(), ChatFamily::kPhi3);
  EXPECT_EQ(t.name(), "phi3-mini");
  EXPECT_EQ(t.apply(kConversation, true),
            "<s><|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are "
            "you<|end|>\n<|assistant|>\n");
}

TEST(ChatTemplate, FamilyNames) {
  EXPECT_EQ(ChatTemplate::detect("llama3", "<|begin_of_text|>").family(), ChatFamily::kLlama3);
  EXPECT_EQ(ChatTemplate::family_from_name("zephyr"), ChatFamily::kZephyr);
  EXPECT_EQ(ChatTemplate::family_from_name("nope"), std::nullopt);
}

}  // namespace
}  // namespace lockstep::tokenizer
