// Chat templates. lockstep does not run Jinja: it recognises the family of a GGUF file's
// tokenizer.chat_template by distinctive substrings and renders conversations the way that
// family's published template renders them (same text, byte for byte, for the messages and
// roles the template supports). Families and the variants told apart inside them:
//   chatml   <|im_start|>role\n...<|im_end|>\n        (Qwen, SmolLM2, ...; a default system
//            prompt written literally in the template is used when the first message is not one)
//   llama2   [INST] with <<SYS>>                        (Meta Llama 2 chat)
//   llama3   <|start_header_id|>                        (Meta Llama 3 instruct)
//   mistral  [INST] without <<SYS>>: v1, v3, v3-tekken, v7 ([SYSTEM_PROMPT]) and the original
//            v0.1 template
//   zephyr   <|user|> ... eos_token (</s>)              (HuggingFaceH4 zephyr)
//   phi3     <|user|> ... <|end|>                       (Phi-3 small/medium/3.5 and Phi-3-mini)
// A file without a template gets ChatML; an unrecognised template gets ChatML plus a one-line
// warning on stderr.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tokenizer/vocab.h"

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
  // Recognises `source` (a Jinja template, or a family name such as "chatml" or "llama3").
  // bos_text / eos_text are what the template's bos_token / eos_token render as.
  static ChatTemplate detect(const std::string& source, const std::string& bos_text = "",
                             const std::string& eos_text = "");
  // The vocabulary's own template (tokenizer.chat_template), with its BOS/EOS token texts.
  static ChatTemplate for_vocab(const Vocab& vocab);
  // "chatml", "llama2", "llama3", "mistral", "zephyr", "phi3" -> family; otherwise nullopt.
  static std::optional<ChatFamily> family_from_name(const std::string& name);

  ChatFamily family() const { return family_; }
  // Family plus variant, e.g. "mistral-v3-tekken", for logs.
  std::string name() const;
  // True when the source was neither empty nor recognised (ChatML is used instead).
  bool fell_back() const { return fell_back_; }
  // The default system prompt a ChatML template inserts, or "".
  const std::string& default_system() const { return default_system_; }

  // Renders the conversation. add_generation_prompt appends the opening of an assistant turn
  // (families whose template has none ignore it).
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
