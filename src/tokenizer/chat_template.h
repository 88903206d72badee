// Chat templates. A GGUF file's own tokenizer.chat_template is rendered by lockstep's Jinja
// interpreter (tokenizer/jinja), as Hugging Face transformers renders it: messages (role,
// content), add_generation_prompt, bos_token and eos_token. The family of the template is also
// recognised by distinctive substrings, for logs and as the fallback: a file without a template
// (ChatML), or with one that does not parse (one warning line, then the family it resembles),
// is rendered by hand-written code that produces what each family's published template does:
//   chatml   <|im_start|>role\n...<|im_end|>\n        (Qwen, SmolLM2, ...; a default system
//            prompt written literally in the template is used when the first message is not one)
//   llama2   [INST] with <<SYS>>                        (Meta Llama 2 chat)
//   llama3   <|start_header_id|>                        (Meta Llama 3 instruct)
//   mistral  [INST] without <<SYS>>: v1, v3, v3-tekken, v7 ([SYSTEM_PROMPT]) and the original
//            v0.1 template
//   zephyr   <|user|> ... eos_token (</s>)              (HuggingFaceH4 zephyr)
//   phi3     <|user|> ... <|end|>                       (Phi-3 small/medium/3.5 and Phi-3-mini)
// An unparseable template that resembles none of them gets ChatML.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/vocab.h"

namespace lockstep::tokenizer::jinja {
class Template;
}

namespace lockstep::tokenizer {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatFamily { kChatML, kLlama2, kLlama3, kMistral, kZephyr, kPhi3 };

// A rendered conversation: the text, and where in it the messages' contents lie (in order, not
// overlapping). Contents are text: special tokens written in them are not parsed.
struct RenderedChat {
  std::string text;
  std::vector<TextRange> contents;
};

class ChatTemplate {
 public:
  // Parses `source` (a Jinja template), or takes a family name such as "chatml" or "llama3".
  // bos_text / eos_text are what the template's bos_token / eos_token render as. A template that
  // does not parse gets one warning line on stderr and the family fallback.
  static ChatTemplate detect(const std::string& source, const std::string& bos_text = "",
                             const std::string& eos_text = "");
  // The hand-written renderer of the family `source` resembles (ChatML when none), without
  // running the template: what a template that does not parse falls back to.
  static ChatTemplate builtin(const std::string& source, const std::string& bos_text = "",
                              const std::string& eos_text = "");
  // The vocabulary's own template (tokenizer.chat_template), with its BOS/EOS token texts.
  static ChatTemplate for_vocab(const Vocab& vocab);
  // "chatml", "llama2", "llama3", "mistral", "zephyr", "phi3" -> family; otherwise nullopt.
  static std::optional<ChatFamily> family_from_name(const std::string& name);

  ChatFamily family() const { return family_; }
  // Family plus variant, e.g. "mistral-v3-tekken"; "jinja" for a template that parses but
  // resembles no family.
  std::string name() const;
  // For logs: the name, and whether the file's own template renders ("llama3 (the file's
  // template)", "chatml (built in)").
  std::string description() const;
  // True when the file's template renders the chats (it parsed).
  bool uses_jinja() const { return jinja_ != nullptr; }
  // True when the source was neither empty nor usable: it did not parse and resembles no family
  // (ChatML is used instead).
  bool fell_back() const { return fell_back_; }
  // The default system prompt a ChatML template inserts, or "".
  const std::string& default_system() const { return default_system_; }

  // Renders the conversation. add_generation_prompt appends the opening of an assistant turn
  // (families whose template has none ignore it). Throws InputError (one line) when the file's
  // template fails on this conversation (raise_exception, an undefined value, a limit).
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // The same text, with the ranges of it that came from message contents.
  RenderedChat render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  ChatFamily family_ = ChatFamily::kChatML;
  int variant_ = 0;
  bool fell_back_ = false;
  bool strip_ = false;               // llama2: content.strip()
  bool bos_each_turn_ = false;       // llama2: bos_token + '[INST]'
  bool bos_at_start_ = false;        // template starts with {{ bos_token }} (llama2, phi3)
  bool eos_without_prompt_ = false;  // phi3: eos_token when add_generation_prompt is false
  std::string default_system_;
  std::string bos_, eos_;
  std::shared_ptr<const jinja::Template> jinja_;
  bool family_known_ = true;

  RenderedChat render_family(const std::vector<ChatMessage>& messages,
                             bool add_generation_prompt) const;
  RenderedChat render_jinja(const std::vector<ChatMessage>& messages,
                            bool add_generation_prompt) const;
  // Recognises the family of a template by its substrings; false when none matches.
  bool detect_family(const std::string& src);
};

// Renders a conversation with the vocabulary's template and tokenizes it: special tokens are
// parsed in the template's markup but not inside message contents (llama.cpp's
// --no-parse-special for user text: "A<|im_end|>" typed by a user cannot close the turn or open
// another role), and BOS is added as the vocabulary asks (a BOS text the template already wrote
// at the start is not doubled).
std::vector<TokenId> tokenize_chat(const Vocab& vocab, const ChatTemplate& tmpl,
                                   const std::vector<ChatMessage>& messages,
                                   bool add_generation_prompt);

}  // namespace lockstep::tokenizer
