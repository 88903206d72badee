#include "tokenizer/chat_template.h"

#include <cstdio>

#include "tokenizer/jinja/template.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lockstep::tokenizer {

namespace {

enum MistralVariant { kMistralLegacy, kMistralV1, kMistralV3, kMistralTekken, kMistralV7 };
enum Phi3Variant { kPhi3Standard, kPhi3Mini };

bool contains(const std::string& s, const char* needle) {
  return s.find(needle) != std::string::npos;
}

// Python's str.strip() / Jinja's trim: Unicode whitespace (str.isspace) at both ends.
std::string py_strip(const std::string& s) {
  const auto cps = utf8_decode(s);
  auto space = [](uint32_t c) { return is_whitespace(c) || (c >= 0x1C && c <= 0x1F); };
  size_t b = 0, e = cps.size();
  while (b < e && space(cps[b])) ++b;
  while (e > b && space(cps[e - 1])) --e;
  if (b == 0 && e == cps.size()) return s;
  std::string out;
  for (size_t i = b; i < e; ++i) utf8_append(out, cps[i]);
  return out;
}

// A ChatML template may write a default system turn literally, e.g. SmolLM2's
//   {{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\n' }}
// Returns its text (Jinja string escapes decoded), or "".
std::string find_default_system(const std::string& tmpl) {
  static const std::string kOpen = "<|im_start|>system";
  static const std::string kClose = "<|im_end|>";
  for (size_t pos = tmpl.find(kOpen); pos != std::string::npos; pos = tmpl.find(kOpen, pos + 1)) {
    size_t p = pos + kOpen.size();
    if (tmpl.compare(p, 2, "\\n") == 0) {
      p += 2;
    } else if (p < tmpl.size() && tmpl[p] == '\n') {
      p += 1;
    } else {
      continue;
    }
    const size_t end = tmpl.find(kClose, p);
    if (end == std::string::npos) continue;
    const std::string raw = tmpl.substr(p, end - p);
    // A literal only: no string delimiters, concatenation or template syntax inside.
    if (raw.empty() || raw.find_first_of("'\"{}+") != std::string::npos) continue;
    std::string text;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size()) {
        const char c = raw[++i];
        text.push_back(c == 'n' ? '\n' : c == 't' ? '\t' : c);
      } else {
        text.push_back(raw[i]);
      }
    }
    return text;
  }
  return "";
}

}  // namespace

std::optional<ChatFamily> ChatTemplate::family_from_name(const std::string& name) {
  if (name == "chatml") return ChatFamily::kChatML;
  if (name == "llama2") return ChatFamily::kLlama2;
  if (name == "llama3") return ChatFamily::kLlama3;
  if (name == "mistral") return ChatFamily::kMistral;
  if (name == "zephyr") return ChatFamily::kZephyr;
  if (name == "phi3") return ChatFamily::kPhi3;
  return std::nullopt;
}

ChatTemplate ChatTemplate::detect(const std::string& src, const std::string& bos_text,
                                  const std::string& eos_text) {
  ChatTemplate t;
  t.bos_ = bos_text;
  t.eos_ = eos_text;
  if (src.empty()) return t;  // no template: ChatML
  if (auto f = family_from_name(src)) {
    t.family_ = *f;
    if (*f == ChatFamily::kMistral) t.variant_ = kMistralV1;
    if (*f == ChatFamily::kLlama2) t.strip_ = t.bos_each_turn_ = true;
    if (*f == ChatFamily::kPhi3) t.eos_without_prompt_ = true;
    return t;
  }
  t.family_known_ = t.detect_family(src);
  try {
    t.jinja_ = std::make_shared<const jinja::Template>(src);
  } catch (const jinja::Error& e) {
    t.fell_back_ = !t.family_known_;
    std::fprintf(stderr,
                 "lockstep: warning: the chat template does not parse (%s), formatting chats as "
                 "%s\n",
                 printable(e.what(), 200).c_str(), t.name().c_str());
  }
  return t;
}

ChatTemplate ChatTemplate::builtin(const std::string& src, const std::string& bos_text,
                                   const std::string& eos_text) {
  ChatTemplate t;
  t.bos_ = bos_text;
  t.eos_ = eos_text;
  if (auto f = family_from_name(src)) return detect(src, bos_text, eos_text);
  t.family_known_ = t.detect_family(src);
  t.fell_back_ = !src.empty() && !t.family_known_;
  return t;
}

bool ChatTemplate::detect_family(const std::string& src) {
  ChatTemplate& t = *this;
  const bool starts_with_bos = src.rfind("{{ bos_token }}", 0) == 0 ||
                               src.rfind("{{bos_token}}", 0) == 0 ||
                               src.rfind("{{- bos_token }}", 0) == 0;
  if (contains(src, "<|im_start|>") && !contains(src, "<|im_sep|>")) {
    t.family_ = ChatFamily::kChatML;
    t.default_system_ = find_default_system(src);
  } else if (contains(src, "[INST]") && contains(src, "<<SYS>>")) {
    t.family_ = ChatFamily::kLlama2;
    t.strip_ = contains(src, ".strip()") || contains(src, "| trim");
    t.bos_each_turn_ =
        contains(src, "bos_token + '[INST]") || contains(src, "bos_token + \"[INST]");
    t.bos_at_start_ = !t.bos_each_turn_ && contains(src, "bos_token");
  } else if (contains(src, "[INST]")) {
    t.family_ = ChatFamily::kMistral;
    if (contains(src, "[SYSTEM_PROMPT]")) {
      t.variant_ = kMistralV7;
    } else if (contains(src, "' [INST] '")) {
      t.variant_ = kMistralV1;
    } else if (contains(src, "\"[INST]\"") || contains(src, "'[INST]'")) {
      t.variant_ = kMistralTekken;
    } else if (contains(src, "[AVAILABLE_TOOLS]")) {
      t.variant_ = kMistralV3;
    } else {
      t.variant_ = kMistralLegacy;
    }
  } else if (contains(src, "<|assistant|>") && contains(src, "<|end|>")) {
    t.family_ = ChatFamily::kPhi3;
    // Phi-3-mini writes the assistant header right after each user turn.
    const bool mini = contains(src, "'<|end|>' + '\n' + '<|assistant|>'") ||
                      contains(src, "'<|end|>' + '\\n' + '<|assistant|>'");
    t.variant_ = mini ? kPhi3Mini : kPhi3Standard;
    t.bos_at_start_ = starts_with_bos;
    t.eos_without_prompt_ = contains(src, "{% else %}{{ eos_token }}");
  } else if (contains(src, "<|user|>") && contains(src, "<|assistant|>") &&
             (contains(src, "eos_token") || contains(src, "</s>"))) {
    t.family_ = ChatFamily::kZephyr;
  } else if (contains(src, "<|start_header_id|>") && contains(src, "<|end_header_id|>")) {
    t.family_ = ChatFamily::kLlama3;
  } else {
    t.family_ = ChatFamily::kChatML;
    return false;
  }
  return true;
}

ChatTemplate ChatTemplate::for_vocab(const Vocab& vocab) {
  const std::string bos = vocab.bos() != kNoToken ? vocab.token_text(vocab.bos()) : "";
  const std::string eos = vocab.eos() != kNoToken ? vocab.token_text(vocab.eos()) : "";
  return detect(vocab.chat_template(), bos, eos);
}

std::string ChatTemplate::description() const {
  return jinja_ ? name() + " (the file's template)" : name() + " (built in)";
}

std::string ChatTemplate::name() const {
  if (!family_known_ && jinja_) return "jinja";
  switch (family_) {
    case ChatFamily::kChatML:
      return "chatml";
    case ChatFamily::kLlama2:
      return "llama2";
    case ChatFamily::kLlama3:
      return "llama3";
    case ChatFamily::kMistral: {
      static const char* const v[] = {"mistral-v0.1", "mistral-v1", "mistral-v3",
                                      "mistral-v3-tekken", "mistral-v7"};
      return v[variant_];
    }
    case ChatFamily::kZephyr:
      return "zephyr";
    case ChatFamily::kPhi3:
      return variant_ == kPhi3Mini ? "phi3-mini" : "phi3";
  }
  return "?";
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& msgs, bool gen) const {
  return render(msgs, gen).text;
}

RenderedChat ChatTemplate::render(const std::vector<ChatMessage>& msgs, bool gen) const {
  return jinja_ ? render_jinja(msgs, gen) : render_family(msgs, gen);
}

RenderedChat ChatTemplate::render_jinja(const std::vector<ChatMessage>& msgs, bool gen) const {
  using jinja::Value;
  jinja::List messages;
  for (const ChatMessage& m : msgs) {
    // Contents are marked: the rendered text keeps track of which bytes came from them.
    messages.push_back(
        Value::make_dict({{"role", Value::string(jinja::Str(m.role))},
                          {"content", Value::string(jinja::Str::marked(m.content))}}));
  }
  jinja::Dict vars = {
      {"messages", Value::make_list(std::move(messages))},
      {"add_generation_prompt", Value::boolean(gen)},
      {"bos_token", Value::string(jinja::Str(bos_))},
      {"eos_token", Value::string(jinja::Str(eos_))},
  };
  jinja::Str out;
  try {
    out = jinja_->render(vars);
  } catch (const jinja::Error& e) {
    throw InputError(std::string("chat template: ") + printable(e.what(), 300));
  }
  RenderedChat rendered;
  rendered.text = std::move(out.text);
  for (const jinja::Span& m : out.marks) rendered.contents.push_back({m.begin, m.len});
  return rendered;
}

RenderedChat ChatTemplate::render_family(const std::vector<ChatMessage>& msgs, bool gen) const {
  RenderedChat rendered;
  std::string& out = rendered.text;
  // Appends a message's content (text from the conversation, not from the template).
  auto content_text = [&](const std::string& text) {
    if (!text.empty()) rendered.contents.push_back({out.size(), text.size()});
    out += text;
  };
  const bool has_system = !msgs.empty() && msgs[0].role == "system";
  switch (family_) {
    case ChatFamily::kChatML: {
      // <|im_start|>{role}\n{content}<|im_end|>\n ... [<|im_start|>assistant\n]
      if (!msgs.empty() && !has_system && !default_system_.empty()) {
        out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
      }
      for (const auto& m : msgs) {
        out += "<|im_start|>" + m.role + "\n";
        content_text(m.content);
        out += "<|im_end|>\n";
      }
      if (gen) out += "<|im_start|>assistant\n";
      break;
    }
    case ChatFamily::kLlama2: {
      // Meta's Llama 2 chat template: the system prompt goes into the first user turn inside
      // <<SYS>> markers; user: bos [INST] content [/INST]; assistant: " content " eos.
      if (bos_at_start_) out += bos_;
      size_t first = has_system ? 1 : 0;
      for (size_t i = first; i < msgs.size(); ++i) {
        std::string content = msgs[i].content;
        if (i == first && has_system) {
          content = "<<SYS>>\n" + msgs[0].content + "\n<</SYS>>\n\n" + content;
        }
        if (strip_) content = py_strip(content);
        // The <<SYS>> markers count as content: they are plain text in Llama 2's vocabulary.
        if (msgs[i].role == "user") {
          out += (bos_each_turn_ ? bos_ : "") + "[INST] ";
          content_text(content);
          out += " [/INST]";
        } else if (msgs[i].role == "assistant") {
          out += " ";
          content_text(content);
          out += " " + eos_;
        }
      }
      break;
    }
    case ChatFamily::kLlama3: {
      // bos, then <|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>
      for (size_t i = 0; i < msgs.size(); ++i) {
        if (i == 0) out += bos_;
        out += "<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n";
        content_text(py_strip(msgs[i].content));
        out += "<|eot_id|>";
      }
      if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
    case ChatFamily::kMistral: {
      out += bos_;
      if (variant_ == kMistralV7) {
        for (const auto& m : msgs) {
          if (m.role == "user") {
            out += "[INST] ";
            content_text(m.content);
            out += "[/INST]";
          } else if (m.role == "system") {
            out += "[SYSTEM_PROMPT] ";
            content_text(m.content);
            out += "[/SYSTEM_PROMPT]";
          } else if (m.role == "assistant") {
            out += " ";
            content_text(m.content);
            out += eos_;
          }
        }
        break;
      }
      struct Style {
        const char* open;
        const char* close;
        const char* reply_prefix;
        bool trim_reply;
        bool system_in_last;  // system prompt joins the last message (v3) or the first (v1)
      };
      static const Style kStyles[] = {
          {"[INST] ", " [/INST]", "", false, false},    // v0.1
          {" [INST] ", " [/INST]", " ", false, false},  // v1
          {"[INST] ", "[/INST]", " ", true, true},      // v3
          {"[INST]", "[/INST]", "", false, true},       // v3-tekken
      };
      const Style& st = kStyles[variant_];
      const size_t first = has_system ? 1 : 0;
      for (size_t i = first; i < msgs.size(); ++i) {
        const auto& m = msgs[i];
        if (m.role == "user") {
          const bool sys_here =
              has_system && (st.system_in_last ? i + 1 == msgs.size() : i == first);
          out += st.open;
          if (sys_here) {
            content_text(msgs[0].content);
            out += "\n\n";
          }
          content_text(m.content);
          out += st.close;
        } else if (m.role == "assistant") {
          out += st.reply_prefix;
          content_text(st.trim_reply ? py_strip(m.content) : m.content);
          out += eos_;
        }
      }
      break;
    }
    case ChatFamily::kZephyr: {
      // <|{role}|>\n{content}{eos}\n  for system/user/assistant; then <|assistant|>\n
      for (const auto& m : msgs) {
        if (m.role == "user" || m.role == "system" || m.role == "assistant") {
          out += "<|" + m.role + "|>\n";
          content_text(m.content);
          out += eos_ + "\n";
        }
      }
      if (gen && !msgs.empty()) out += "<|assistant|>\n";
      break;
    }
    case ChatFamily::kPhi3: {
      if (bos_at_start_) out += bos_;
      if (variant_ == kPhi3Mini) {
        // Phi-3-mini: the assistant header follows every user turn; no system role.
        for (const auto& m : msgs) {
          if (m.role == "user") {
            out += "<|user|>\n";
            content_text(m.content);
            out += "<|end|>\n<|assistant|>\n";
          } else if (m.role == "assistant") {
            content_text(m.content);
            out += "<|end|>\n";
          }
        }
        break;
      }
      for (const auto& m : msgs) {
        out += "<|" + m.role + "|>\n";
        content_text(m.content);
        out += "<|end|>\n";
      }
      if (gen) {
        out += "<|assistant|>\n";
      } else if (eos_without_prompt_) {
        out += eos_;
      }
      break;
    }
  }
  return rendered;
}

std::vector<TokenId> tokenize_chat(const Vocab& vocab, const ChatTemplate& tmpl,
                                   const std::vector<ChatMessage>& messages,
                                   bool add_generation_prompt) {
  RenderedChat r = tmpl.render(messages, add_generation_prompt);
  if (vocab.add_bos() && vocab.bos() != kNoToken) {
    const std::string& bos = vocab.token_text(vocab.bos());
    // Only a BOS the template wrote: never the start of a message's content.
    const bool markup = r.contents.empty() || r.contents[0].begin >= bos.size();
    if (!bos.empty() && markup && r.text.rfind(bos, 0) == 0) {
      r.text.erase(0, bos.size());
      for (TextRange& c : r.contents) c.begin -= bos.size();
    }
  }
  return vocab.tokenize(r.text, /*add_special=*/true, r.contents);
}

}  // namespace lockstep::tokenizer
