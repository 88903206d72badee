// `lockstep chat`: a multi-turn conversation in the terminal. Each message on stdin is a user
// turn; the answer streams to stdout. The KV cache is kept across turns: the conversation is
// rendered with the chat template and only the tokens past what the cache already holds are
// processed.
//
// At a terminal, lines are read with libedit (editing, history); from a pipe, plain lines. A line
// ending in a backslash continues on the next line, and a block between lines starting and ending
// with """ is one message (pasted text, say). /help, /clear (new conversation) and /exit are
// commands; end of input quits. Ctrl-C stops the answer being generated and returns to the
// prompt; Ctrl-C at the prompt quits (exit 0). When the context is full the chat says so and
// /clear starts over.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#ifdef LOCKSTEP_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

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

const char* kChatHelp =
    "commands:\n"
    "  /help    this list\n"
    "  /clear   start a new conversation (forgets the history and empties the KV cache)\n"
    "  /exit    quit (so does end of input, or Ctrl-C at the prompt)\n"
    "input: a line ending in \\ continues on the next line; lines between \"\"\" and \"\"\" are "
    "one message\n"
    "Ctrl-C while an answer is generated stops it and returns to the prompt\n";

// Set by the SIGINT handler, read by the generation loop (through GenerationRequest::cancelled)
// and after a read at the prompt. A lock-free atomic is safe to store from a signal handler.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_sigint(int) {
  g_interrupted.store(true);
}

// Without SA_RESTART, so that a read blocked at the prompt returns and the chat can quit.
void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
}

// One byte of input, or EOF at end of input or once Ctrl-C was pressed. libedit's own reader
// retries a read that a signal interrupted, and a signal that comes just before a blocking read
// would not interrupt it at all: waiting in short polls that look at the flag closes both gaps.
extern "C" int read_char_or_interrupt(FILE*) {
  for (;;) {
    if (g_interrupted.load()) return EOF;
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const int ready = poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) return EOF;
    if (ready <= 0) continue;
    unsigned char c;
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n == 1) return c;
    if (n == 0 || errno != EINTR) return EOF;
  }
}

// One line from the user, without its line end; nullopt at end of input or on Ctrl-C.
class LineReader {
 public:
  LineReader() : terminal_(isatty(STDIN_FILENO)) {
    if (terminal_) {
      // The prompt and the line being edited go to the terminal itself, whatever stdout (only the
      // answers) and stderr (logs) are redirected to; libedit edits only on a terminal.
      tty_ = std::fopen("/dev/tty", "w");
      out_ = tty_ ? tty_ : stderr;
#ifdef LOCKSTEP_HAVE_LIBEDIT
      rl_outstream = out_;
      rl_catch_signals = 0;  // the chat's own SIGINT handler decides
      rl_getc_function = read_char_or_interrupt;
#endif
    }
  }

  ~LineReader() {
    if (tty_) std::fclose(tty_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool terminal() const {
    return terminal_;
  }

  std::optional<std::string> read(const char* prompt) {
#ifdef LOCKSTEP_HAVE_LIBEDIT
    if (terminal_) {
      char* raw = readline(prompt);
      if (!raw) return std::nullopt;
      std::string line = raw;
      std::free(raw);
      if (!line.empty()) add_history(line.c_str());
      return line;
    }
#else
    // Built without libedit: a plain prompt, no editing or history.
    if (terminal_) {
      std::fputs(prompt, out_);
      std::fflush(out_);
    }
#endif
    std::string line;
    int c = EOF;
    while ((c = read_char_or_interrupt(nullptr)) != EOF && c != '\n') line += char(c);
    if (c == EOF && (line.empty() || g_interrupted.load())) return std::nullopt;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  }

  // Moves the terminal's cursor past a prompt left unanswered (Ctrl-C, Ctrl-D).
  void end_line() {
    std::fputs("\n", out_);
    std::fflush(out_);
  }

 private:
  bool terminal_;
  std::FILE* tty_ = nullptr;
  std::FILE* out_ = stderr;  // where the prompt and the line being edited go
};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// One message: a line, continued while it ends in a backslash, or a """ block. nullopt at end of
// input or on Ctrl-C.
std::optional<std::string> read_message(LineReader& in) {
  auto first = in.read("> ");
  if (!first) return std::nullopt;
  std::string line = *first;
  if (trim(line).rfind("\"\"\"", 0) == 0) {
    std::string block = trim(line).substr(3);
    // """text""" on one line is a block of one line.
    if (ends_with(block, "\"\"\"")) return block.substr(0, block.size() - 3);
    std::string message = block;
    bool first_line = block.empty();
    for (;;) {
      auto next = in.read("... ");
      if (!next) return std::nullopt;
      const bool last = ends_with(trim(*next), "\"\"\"");
      std::string part = *next;
      if (last) part = part.substr(0, part.rfind("\"\"\""));
      if (!(last && part.empty())) {
        message += (first_line ? "" : "\n") + part;
        first_line = false;
      }
      if (last) return message;
    }
  }
  std::string message;
  while (!line.empty() && line.back() == '\\') {
    message += line.substr(0, line.size() - 1) + "\n";
    auto next = in.read("... ");
    if (!next) return std::nullopt;
    line = *next;
  }
  return message + line;
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

void print_answer_piece(std::string_view piece) {
  write_stdout(piece);
}

int chat_command(const ChatFlags& f) {
  print_flag_notes(f.model, "chat");
  const SamplingParams sampling = resolve_sampling(f.sampling);
  LoadedModel m = load_for_generation(
      f.model, "chat",
      sampling.temperature > 0 ? " | seed " + std::to_string(sampling.seed) : " | greedy");
  warn_ctx_beyond_training("chat", f.model.n_ctx, m.summary.n_ctx_train);
  const auto tmpl = tokenizer::ChatTemplate::for_vocab(*m.vocab);
  if (m.vocab->chat_template().empty())
    std::fprintf(stderr,
                 "lockstep chat: note: the model has no chat template (tokenizer.chat_template); "
                 "using %s\n",
                 tmpl.name().c_str());
  std::fprintf(stderr,
               "lockstep chat: template %s; /help lists the commands, /exit or end of input "
               "quits\n",
               tmpl.description().c_str());
  Session session(std::move(m.serving), *m.vocab, sampling);
  const int n_ctx = session.backend().n_ctx();

  std::vector<tokenizer::ChatMessage> messages;
  auto new_conversation = [&] {
    messages.clear();
    if (!f.system.empty()) messages.push_back({"system", f.system});
    session.truncate(0);
  };
  new_conversation();
  LineReader in;
  install_sigint_handler();
  for (;;) {
    g_interrupted.store(false);
    const auto read = read_message(in);
    if (!read) {  // end of input, or Ctrl-C at the prompt
      if (in.terminal()) in.end_line();
      break;
    }
    const std::string text = *read;
    const std::string command = trim(text);
    if (command == "/exit" || command == "/quit") break;
    if (command == "/help") {
      std::fputs(kChatHelp, stderr);
      continue;
    }
    if (command == "/clear") {
      new_conversation();
      std::fprintf(stderr, "lockstep chat: new conversation\n");
      continue;
    }
    if (command.empty()) continue;
    if (command[0] == '/' && command.find_first_of(" \t\n") == std::string::npos) {
      std::fprintf(stderr, "lockstep chat: unknown command %s; /help lists them\n",
                   command.c_str());
      continue;
    }

    messages.push_back({"user", text});
    std::vector<int32_t> conversation;
    try {
      conversation =
          tokenizer::tokenize_chat(*m.vocab, tmpl, messages, /*add_generation_prompt=*/true);
    } catch (const InputError& e) {
      // The model's template refuses this conversation (e.g. a system prompt it has no role
      // for): say so and keep the chat going without the message.
      messages.pop_back();
      std::fprintf(stderr, "lockstep chat: %s\n", one_line(e.what()).c_str());
      continue;
    }
    if (int(conversation.size()) >= n_ctx) {
      messages.pop_back();
      std::fprintf(stderr,
                   "lockstep chat: with this message the conversation (%zu tokens) does not fit "
                   "the context of %d tokens; /clear starts a new conversation (or raise -c)\n",
                   conversation.size(), n_ctx);
      continue;
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
    req.ignore_eos = f.sampling.ignore_eos;
    req.cancelled = [] { return g_interrupted.load(); };
    const GenerationResult r = session.generate(new_tokens, req, print_answer_piece);
    write_stdout("\n");
    messages.push_back({"assistant", r.text});
    std::fprintf(stderr,
                 "lockstep chat: [%d new prompt tok, %.2f tok/s | %d tok, %.2f tok/s | %s]\n",
                 r.timings.prompt_tokens, r.timings.prompt_tok_per_s(), r.timings.gen_tokens,
                 r.timings.gen_tok_per_s(), r.finish_reason.c_str());
    if (r.finish_reason == "cancelled")
      std::fprintf(stderr, "lockstep chat: stopped by Ctrl-C (Ctrl-C at the prompt quits)\n");
    if (r.context_full)
      std::fprintf(stderr,
                   "lockstep chat: stopped: the context of %d tokens is full; /clear starts a new "
                   "conversation\n",
                   n_ctx);
  }
  return 0;
}

}  // namespace

void add_chat(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("chat", "Chat with a model in the terminal");
  cmd->footer(std::string("\nIn the chat:\n") + kChatHelp +
              "When the context (-c) is full the chat says so; /clear starts a new conversation.");
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
