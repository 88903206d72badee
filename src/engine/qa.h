// `lockstep qa`: golden-output checks on every available backend, plus each backend's parity
// verdict. Chat answers for models with a chat template (the default SmolLM2 model and the like),
// plain-text completions for models without one (pretrained models such as Gemma 3 270M).
#pragma once

#include <string>
#include <vector>

#include "engine/backend_factory.h"

namespace lockstep {

struct QaCheck {
  std::string backend;
  std::string name;  // e.g. "2+2 contains 4"
  bool passed = false;
  std::string detail;  // the answer, or why it failed
};

struct QaReport {
  std::vector<QaCheck> checks;
  std::vector<std::pair<std::string, ParityVerdict>> verdicts;  // per backend
  // The model has no chat template (a pretrained model such as Gemma 3 270M): plain-text
  // completions are checked instead of chat answers.
  bool completion = false;
  bool passed() const;
};

struct QaOptions {
  std::vector<std::string> backends;  // empty: every available backend
  BackendOptions backend_options;     // threads, context, knobs of every backend it opens
  int max_tokens = 48;
  ParityConfig parity;
};

QaReport run_qa(const Model& model, const tokenizer::Vocab& vocab, const QaOptions& options);

// The heuristics, exposed for tests. A text is gibberish when it is mostly not words: too few
// alphabetic characters, over-long runs without spaces, or one word repeated many times in a row.
bool looks_like_gibberish(const std::string& text, std::string* why = nullptr);
bool looks_like_greeting(const std::string& text);
// Any control (or unknown) token other than a final end-of-generation one; user-defined tokens
// are text.
bool has_stray_special_tokens(const tokenizer::Vocab& vocab, const std::vector<int32_t>& tokens,
                              std::string* why = nullptr);

}  // namespace lockstep
