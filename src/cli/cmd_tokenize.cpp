// `lockstep tokenize [-m MODEL] [--no-bos] [--parse-special] [--ids | --json] (TEXT | -f FILE)`
// Behaves like llama.cpp's llama-tokenize: BOS is added when the vocabulary asks for it (unless
// --no-bos); the default output is one line per token, `%6d -> 'piece'` (pieces of special tokens
// shown as their text, other bytes written raw); --ids prints a JSON array of the ids; --json an
// array of {"id", "piece"} objects (ill-formed UTF-8 in a piece shown as U+FFFD). Works on
// vocab-only GGUF files. stdout carries only the result.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/model_source.h"
#include "cli/generation_flags.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"
#include "util/error.h"
#include "util/stdio_files.h"

namespace lockstep::cli {

namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  std::string file;
  bool no_bos = false;
  bool parse_special = false;
  bool ids = false;
  bool json = false;
};

int run_tokenize(const TokenizeOptions& o, bool from_file) {
  const std::string text =
      from_file ? read_whole_file(o.file, o.file + ": cannot read (-f)") : o.text;
  const auto vocab = tokenizer::Vocab::load(resolve_model_path(o.model));
  const bool add_special = vocab.add_bos() && !o.no_bos;
  const auto ids = vocab.tokenize(text, add_special, o.parse_special);

  std::string out;
  if (o.ids) {
    out = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(ids[i]);
    }
    out += "]\n";
  } else if (o.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (auto id : ids) {
      arr.push_back(
          {{"id", id}, {"piece", tokenizer::utf8_sanitize(vocab.token_to_piece(id, true))}});
    }
    out = arr.dump() + "\n";
  } else {
    for (auto id : ids) {
      char head[32];
      std::snprintf(head, sizeof head, "%6d -> '", id);
      out += head;
      out += vocab.token_to_piece(id, true);
      out += "'\n";
    }
  }
  write_stdout(out);
  return kExitOk;
}

}  // namespace

void add_tokenize(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("tokenize", "Tokenize text with a model's vocabulary");
  auto o = std::make_shared<TokenizeOptions>();
  cmd->add_option("-m,--model", o->model,
                  "GGUF file, a vocab-only one is enough (default: $LOCKSTEP_MODEL, else the "
                  "SmolLM2-135M-Instruct download of scripts/get-default-model.sh)")
      ->check(non_empty_path());
  auto* text_opt = cmd->add_option("text", o->text, "Text to tokenize");
  auto* file_opt = cmd->add_option("-f,--file", o->file, "Read the text from FILE, byte-exact");
  text_opt->excludes(file_opt);
  cmd->add_flag("--no-bos", o->no_bos, "Do not add BOS even if the vocabulary asks for it");
  cmd->add_flag("--parse-special", o->parse_special,
                "Turn special-token text such as <|im_start|> into single tokens");
  auto* ids_opt = cmd->add_flag("--ids", o->ids, "Print only the ids, as a JSON array");
  auto* json_opt = cmd->add_flag("--json", o->json, "Print a JSON array of {id, piece} objects");
  ids_opt->excludes(json_opt);
  cmd->callback([&action, o, text_opt, file_opt] {
    if (text_opt->count() == 0 && file_opt->count() == 0) {
      throw CLI::ValidationError("tokenize needs TEXT or -f FILE");
    }
    const bool from_file = file_opt->count() > 0;
    action = [o, from_file] { return run_tokenize(*o, from_file); };
  });
}

}  // namespace lockstep::cli
