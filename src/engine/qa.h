// `lockstep qa`: golden-output checks on every available backend, plus each backend's parity
// verdict. Meant for instruction-tuned chat models (the default SmolLM2 model and the like).
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
// Two identical control/special tokens in a row, or any special token other than a final
// end-of-generation one.
bool has_stray_special_tokens(const tokenizer::Vocab& vocab, const std::vector<int32_t>& tokens,
                              std::string* why = nullptr);

}  // namespace lockstep
