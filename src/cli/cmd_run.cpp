// `lockstep run`: one prompt in, generated text out. stdout carries only the generated text as it
// streams (or, with --json, exactly one JSON object); the header and the timings go to stderr.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "engine/generator.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/stdio_files.h"

namespace lockstep::cli {

namespace {

struct RunFlags {
  ModelFlags model;
  SamplingFlags sampling;
  std::string prompt;
  std::string prompt_file;
  int n_predict = -1;
  bool chat = false;
  std::string system;
  std::vector<std::string> stop;
  bool json = false;
};

std::string read_prompt(const RunFlags& f, bool prompt_given) {
  if (prompt_given) return f.prompt;
  if (!f.prompt_file.empty())
    return read_whole_file(f.prompt_file, "cannot read prompt file '" + f.prompt_file + "' (-f)");
  // A terminal on stdin means nobody is piping a prompt: waiting would look like a hang.
  if (isatty(STDIN_FILENO))
    throw InputError("no prompt: give -p TEXT, -f FILE, or pipe it on stdin");
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

// Why a "length" finish came: the context, not the -n limit.
std::string context_full_note(int n_ctx) {
  return "stopped: the context of " + std::to_string(n_ctx) +
         " tokens is full (-c); a larger -c allows a longer answer";
}

std::string result_json(const GenerationResult& r, const LoadedModel& m, const Backend& backend,
                        uint64_t seed) {
  const ModelSummary& s = m.summary;
  const auto& t = r.timings;
  nlohmann::ordered_json j;
  j["text"] = r.text;
  j["tokens"] = r.tokens;
  j["finish_reason"] = r.finish_reason;
  if (r.context_full) j["finish_note"] = context_full_note(backend.n_ctx());
  j["backend_used"] = m.backend_used;
  j["parity"] = parity_json(m);
  j["seed"] = seed;
  j["timings"] = {{"load_ms", t.load_ms},
                  {"prompt_tokens", t.prompt_tokens},
                  {"prompt_ms", t.prompt_ms},
                  {"prompt_tok_per_s", t.prompt_tok_per_s()},
                  {"gen_tokens", t.gen_tokens},
                  {"gen_ms", t.gen_ms},
                  {"gen_tok_per_s", t.gen_tok_per_s()}};
  j["model"] = {{"path", s.path},
                {"name", s.name},
                {"architecture", s.architecture},
                {"file_type", s.file_type},
                {"n_params", s.n_params},
                {"n_vocab", s.n_vocab},
                {"n_ctx_train", s.n_ctx_train},
                {"n_ctx", backend.n_ctx()}};
  // The text is valid UTF-8 by construction (the detokenizer repairs bytes); replace, never throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int run_command(const RunFlags& f, bool prompt_given) {
  const std::string prompt_text = read_prompt(f, prompt_given);
  const SamplingParams sampling = resolve_sampling(f.sampling);
  const std::string seed_note =
      sampling.temperature > 0 ? " | seed " + std::to_string(sampling.seed) : " | greedy";
  auto build_prompt = [&](const tokenizer::Vocab& vocab) {
    if (!f.chat) return vocab.tokenize(prompt_text, /*add_special=*/true, /*parse_special=*/true);
    const auto tmpl = tokenizer::ChatTemplate::for_vocab(vocab);
    if (vocab.chat_template().empty())
      std::fprintf(stderr,
                   "lockstep run: note: the model has no chat template "
                   "(tokenizer.chat_template); --chat uses %s\n",
                   tmpl.name().c_str());
    std::vector<tokenizer::ChatMessage> messages;
    if (!f.system.empty()) messages.push_back({"system", f.system});
    messages.push_back({"user", prompt_text});
    return tokenizer::tokenize_chat(vocab, tmpl, messages, /*add_generation_prompt=*/true);
  };
  print_flag_notes(f.model, "run");
  LoadedModel m = load_for_generation(f.model, "run", seed_note, build_prompt);
  warn_ctx_beyond_training("run", f.model.n_ctx, m.summary.n_ctx_train);

  // The session takes over the prompt tokens the parity gate probed with: never redone.
  Session session(std::move(m.serving), *m.vocab, sampling);
  session.set_load_ms(m.load_ms);
  GenerationRequest req;
  req.max_tokens = f.n_predict;
  req.stop = f.stop;
  req.ignore_eos = f.sampling.ignore_eos;
  PieceCallback stream;
  if (!f.json) stream = [](std::string_view piece) { write_stdout(piece); };
  const GenerationResult r = session.complete(m.prompt, req, stream);

  // A terminal's prompt should not land after the answer on the same line.
  const bool newline_added =
      !f.json && !r.text.empty() && r.text.back() != '\n' && isatty(STDOUT_FILENO);
  if (newline_added) write_stdout("\n");
  const auto& t = r.timings;
  if (r.context_full)
    std::fprintf(stderr, "%slockstep run: %s\n", f.json || newline_added ? "" : "\n",
                 context_full_note(session.backend().n_ctx()).c_str());
  std::fprintf(stderr,
               "%slockstep run: load %.0f ms | prompt %d tok, %.1f ms, %.2f tok/s | generation %d "
               "tok, %.1f ms, %.2f tok/s | finish %s\n",
               f.json || newline_added || r.context_full ? "" : "\n", t.load_ms, t.prompt_tokens,
               t.prompt_ms, t.prompt_tok_per_s(), t.gen_tokens, t.gen_ms, t.gen_tok_per_s(),
               r.finish_reason.c_str());
  if (f.json) write_stdout(result_json(r, m, session.backend(), sampling.seed) + "\n");
  return 0;
}

}  // namespace

void add_run(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt");
  auto f = std::make_shared<RunFlags>();
  add_model_flags(cmd, f->model);
  auto* p_opt = cmd->add_option("-p,--prompt", f->prompt, "prompt text");
  auto* f_opt = cmd->add_option("-f,--file", f->prompt_file, "read the prompt from a file");
  p_opt->excludes(f_opt);
  cmd->add_option("-n,--n-predict", f->n_predict,
                  "tokens to generate (-1: until end of generation or a full context)")
      ->capture_default_str();
  cmd->add_flag("--chat", f->chat, "format the prompt as one user turn with the chat template");
  cmd->add_option("--system", f->system, "system message for --chat");
  add_sampling_flags(cmd, f->sampling);
  cmd->add_option("--stop", f->stop, "stop before this text (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_flag("--json", f->json, "print one JSON object with the text, tokens and timings");
  cmd->callback([&action, f, p_opt] {
    check_model_flags(f->model);
    check_sampling_flags(f->sampling);
    if (f->n_predict < -1) throw CLI::ValidationError("--n-predict", "must be >= -1");
    if (!f->system.empty() && !f->chat)
      throw CLI::ValidationError("--system", "only applies with --chat");
    const bool prompt_given = p_opt->count() > 0;
    action = [f, prompt_given] { return run_command(*f, prompt_given); };
  });
}

}  // namespace lockstep::cli
