// `lockstep chat`: a multi-turn conversation in the terminal. Each line on stdin is a user turn;
// the answer streams to stdout. The KV cache is kept across turns: the conversation is rendered
// with the chat template and only the tokens past what the cache already holds are processed.
// `/exit` or end of input quits.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "engine/generator.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/stdio_files.h"

namespace lockstep::cli {

namespace {

struct ChatFlags {
  ModelFlags model;
  SamplingFlags sampling;
  std::string system;
  int n_predict = -1;
};

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

int chat_command(const ChatFlags& f) {
  const SamplingParams sampling = resolve_sampling(f.sampling);
  LoadedModel m = load_for_generation(
      f.model, "chat",
      sampling.temperature > 0 ? " | seed " + std::to_string(sampling.seed) : " | greedy");
  const auto tmpl = tokenizer::ChatTemplate::for_vocab(*m.vocab);
  std::fprintf(stderr, "lockstep chat: template %s; type /exit or end the input to quit\n",
               tmpl.name().c_str());
  Session session(std::move(m.backend), *m.vocab, sampling);
  const int n_ctx = session.backend().n_ctx();

  std::vector<tokenizer::ChatMessage> messages;
  if (!f.system.empty()) messages.push_back({"system", f.system});
  const bool interactive = isatty(STDIN_FILENO);
  std::string line;
  for (;;) {
    if (interactive) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "/exit") break;
    if (line.empty()) continue;

    messages.push_back({"user", line});
    const auto conversation =
        tokenizer::tokenize_chat(*m.vocab, tmpl, messages, /*add_generation_prompt=*/true);
    if (int(conversation.size()) >= n_ctx) {
      std::fprintf(stderr,
                   "lockstep chat: the conversation (%zu tokens) no longer fits the context "
                   "(%d, -c); start a new chat or raise -c\n",
                   conversation.size(), n_ctx);
      return kExitRuntime;
    }
    // Usually the cache is a prefix of the rendered conversation and only the new turn is fed;
    // where re-tokenizing the last answer differs from the sampled ids, the cache is cut back to
    // the common prefix so the model always sees exactly the rendered conversation.
    size_t keep = common_prefix(session.cached_tokens(), conversation);
    if (keep == conversation.size()) --keep;  // at least one token must be fed for new logits
    session.truncate(int(keep));
    const std::vector<int32_t> new_tokens(conversation.begin() + ptrdiff_t(keep),
                                          conversation.end());

    GenerationRequest req;
    req.max_tokens = f.n_predict;
    const GenerationResult r =
        session.generate(new_tokens, req, [](std::string_view piece) { write_stdout(piece); });
    write_stdout("\n");
    messages.push_back({"assistant", r.text});
    std::fprintf(stderr,
                 "lockstep chat: [%d new prompt tok, %.2f tok/s | %d tok, %.2f tok/s | %s]\n",
                 r.timings.prompt_tokens, r.timings.prompt_tok_per_s(), r.timings.gen_tokens,
                 r.timings.gen_tok_per_s(), r.finish_reason.c_str());
  }
  return 0;
}

}  // namespace

void add_chat(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("chat", "Chat with a model in the terminal");
  auto f = std::make_shared<ChatFlags>();
  add_model_flags(cmd, f->model);
  cmd->add_option("--system", f->system, "system message");
  cmd->add_option("-n,--n-predict", f->n_predict,
                  "tokens per answer (-1: until end of turn or a full context)")
      ->capture_default_str();
  add_sampling_flags(cmd, f->sampling);
  cmd->callback([&action, f] {
    check_model_flags(f->model);
    check_sampling_flags(f->sampling);
    if (f->n_predict < -1) throw CLI::ValidationError("--n-predict", "must be >= -1");
    action = [f] { return chat_command(*f); };
  });
}

}  // namespace lockstep::cli
