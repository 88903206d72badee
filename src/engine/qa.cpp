#include "engine/qa.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "backend/registry.h"
#include "engine/generator.h"
#include "tokenizer/chat_template.h"

namespace lockstep {

bool QaReport::passed() const {
  if (checks.empty()) return false;
  return std::all_of(checks.begin(), checks.end(), [](const QaCheck& c) { return c.passed; });
}

static std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool looks_like_greeting(const std::string& text) {
  const std::string t = lower(text);
  for (const char* w : {"hello", "hi ", "hi!", "hi,", "hey", "greetings", "welcome", "how can i",
                        "how may i", "nice to meet"})
    if (t.find(w) != std::string::npos) return true;
  return t.rfind("hi", 0) == 0;
}

bool looks_like_gibberish(const std::string& text, std::string* why) {
  auto fail = [&](const std::string& w) {
    if (why) *why = w;
    return true;
  };
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) return fail("empty answer");
  size_t alnum = 0, ascii = 0, run = 0, longest_run = 0;
  for (unsigned char c : text) {
    if (c < 0x80 && !std::isspace(c)) ++ascii;
    if (std::isalnum(c)) ++alnum;
    run = std::isspace(c) ? 0 : run + 1;
    longest_run = std::max(longest_run, run);
  }
  // Non-ASCII text (another script) is judged only by its repetition below.
  if (ascii * 2 > text.size() && alnum * 2 < ascii)
    return fail("fewer than half the characters are letters or digits");
  if (longest_run > 40)
    return fail("a run of " + std::to_string(longest_run) + " characters without a space");
  std::istringstream words(lower(text));
  std::string w, prev;
  int repeats = 0;
  while (words >> w) {
    repeats = (w == prev) ? repeats + 1 : 0;
    if (repeats >= 4) return fail("the word '" + w + "' five times in a row");
    prev = w;
  }
  return false;
}

bool has_stray_special_tokens(const tokenizer::Vocab& vocab, const std::vector<int32_t>& tokens,
                              std::string* why) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    // User-defined tokens are text the tokenizer keeps whole (Gemma's "\n\n" and runs of
    // spaces, Qwen3's <think>): ordinary output.
    if (!vocab.is_special(tokens[i]) ||
        vocab.token_type(tokens[i]) == tokenizer::TokenType::kUserDefined)
      continue;
    const bool final_eog = i + 1 == tokens.size() && vocab.is_eog(tokens[i]);
    if (final_eog) continue;
    if (why)
      *why = "special token " + vocab.token_text(tokens[i]) + " at generated position " +
             std::to_string(i);
    return true;
  }
  return false;
}

namespace {

struct Answer {
  std::string text;
  std::vector<int32_t> tokens;
};

Answer ask(Session& session, const tokenizer::Vocab& vocab, const std::string& question,
           int max_tokens) {
  const auto tmpl = tokenizer::ChatTemplate::for_vocab(vocab);
  const auto prompt = tokenizer::tokenize_chat(vocab, tmpl, {{"user", question}}, true);
  session.truncate(0);
  GenerationRequest req;
  req.max_tokens = max_tokens;
  auto r = session.generate(prompt, req);
  return {r.text, r.tokens};
}

Answer complete(Session& session, const tokenizer::Vocab& vocab, const std::string& text,
                int max_tokens) {
  const auto prompt = vocab.tokenize(text, vocab.add_bos(), /*parse_special=*/false);
  session.truncate(0);
  GenerationRequest req;
  req.max_tokens = max_tokens;
  auto r = session.generate(prompt, req);
  return {r.text, r.tokens};
}

}  // namespace

QaReport run_qa(const Model& model, const tokenizer::Vocab& vocab, const QaOptions& options) {
  QaReport report;
  report.completion = vocab.chat_template().empty();
  std::vector<std::string> backends = options.backends;
  if (backends.empty()) backends = available_backends();
  for (const auto& name : backends) {
    ServingBackend opened;
    try {
      opened = open_backend(model, vocab, {name, options.backend_options, {}}, options.parity, {});
    } catch (const Error& e) {
      report.checks.push_back({name, "parity gate", false, e.what()});
      continue;
    }
    report.verdicts.emplace_back(name, opened.verdict);
    const bool served_by_candidate = opened.backend_used == name;
    report.checks.push_back(
        {name, "served by this backend", served_by_candidate,
         "backend used: " + opened.backend_used + ", " + opened.verdict.summary()});
    SamplingParams greedy;
    greedy.temperature = 0;
    Session session(std::move(opened), vocab, greedy);

    std::vector<Answer> answers;
    if (report.completion) {
      // A pretrained model without a chat template continues text: facts any such model of a
      // useful size completes (Gemma 3 270M does, per llama.cpp's greedy text).
      answers.push_back(
          complete(session, vocab, "Water boils at a temperature of", options.max_tokens));
      report.checks.push_back({name, "\"Water boils at\" continues with 100",
                               answers.back().text.find("100") != std::string::npos,
                               answers.back().text});
      answers.push_back(
          complete(session, vocab, "The three primary colors are", options.max_tokens));
      report.checks.push_back({name, "\"primary colors\" names red",
                               lower(answers.back().text).find("red") != std::string::npos,
                               answers.back().text});
    } else {
      answers.push_back(ask(session, vocab, "What is 2+2?", options.max_tokens));
      report.checks.push_back({name, "\"What is 2+2?\" answer contains 4",
                               answers.back().text.find('4') != std::string::npos,
                               answers.back().text});
      answers.push_back(ask(session, vocab, "Hello", options.max_tokens));
      report.checks.push_back({name, "\"Hello\" gets a greeting",
                               looks_like_greeting(answers.back().text), answers.back().text});
    }
    for (const Answer* a : {&answers[0], &answers[1]}) {
      std::string why;
      const bool stray = has_stray_special_tokens(vocab, a->tokens, &why);
      report.checks.push_back({name, "no stray special tokens", !stray, stray ? why : "ok"});
      const bool gib = looks_like_gibberish(a->text, &why);
      report.checks.push_back({name, "not gibberish", !gib, gib ? why : "ok"});
    }
  }
  return report;
}

}  // namespace lockstep
