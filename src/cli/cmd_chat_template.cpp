// `lockstep chat-template (-m MODEL | -t FILE) [--messages FILE] [--add-generation-prompt]
//  [--bos TEXT] [--eos TEXT] [--source | --marks]` and `lockstep chat-template -t FILE --vars
//  FILE`: a developer command (not listed in --help) that
// renders a conversation with a chat template and writes the text to stdout, byte-exact and
// without a trailing newline. The template is the model's tokenizer.chat_template (with its
// BOS/EOS texts) or a Jinja file; the messages are a JSON array of {"role", "content"} objects.
// --source prints the template itself instead; --marks the ranges of message contents. --vars
// renders the Jinja file with the variables of a JSON object (tools, custom ones) as they are.
// Tests compare its output with Python's jinja2.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/generation_flags.h"
#include "engine/model_source.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja/template.h"
#include "tokenizer/vocab.h"
#include "util/error.h"
#include "util/stdio_files.h"

namespace lockstep::cli {

namespace {

struct ChatTemplateOptions {
  std::string model;
  std::string template_file;
  std::string messages_file;
  std::string vars_file;
  std::string bos, eos;
  bool add_generation_prompt = false;
  bool source = false;
  bool marks = false;
};

std::vector<tokenizer::ChatMessage> read_messages(const std::string& path) {
  if (path.empty()) return {};
  const std::string text = read_whole_file(path, path + ": cannot read (--messages)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(path + ": not JSON: " + printable(e.what(), 200));
  }
  if (!j.is_array()) throw InputError(path + ": expected a JSON array of messages");
  std::vector<tokenizer::ChatMessage> out;
  for (size_t k = 0; k < j.size(); ++k) {
    const auto& m = j[k];
    const std::string at = path + ": message " + std::to_string(k);
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
        !m["content"].is_string())
      throw InputError(at + ": expected {\"role\": string, \"content\": string}");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

tokenizer::jinja::Value from_json(const nlohmann::ordered_json& j) {
  using tokenizer::jinja::Value;
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return Value::integer(j.get<int64_t>());
    case nlohmann::json::value_t::number_float:
      return Value::real(j.get<double>());
    case nlohmann::json::value_t::string:
      return Value::string(tokenizer::jinja::Str(j.get<std::string>()));
    case nlohmann::json::value_t::array: {
      tokenizer::jinja::List l;
      for (const auto& e : j) l.push_back(from_json(e));
      return Value::make_list(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      tokenizer::jinja::Dict d;
      for (const auto& [k, v] : j.items()) d.emplace_back(k, from_json(v));
      return Value::make_dict(std::move(d));
    }
    default:
      throw InputError("--vars: unsupported JSON value");
  }
}

int render_with_vars(const ChatTemplateOptions& o) {
  const std::string source =
      read_whole_file(o.template_file, o.template_file + ": cannot read (-t)");
  const std::string text = read_whole_file(o.vars_file, o.vars_file + ": cannot read (--vars)");
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(o.vars_file + ": not JSON: " + printable(e.what(), 200));
  }
  if (!j.is_object()) throw InputError(o.vars_file + ": expected a JSON object");
  tokenizer::jinja::Dict vars;
  for (const auto& [k, v] : j.items()) vars.emplace_back(k, from_json(v));
  try {
    const tokenizer::jinja::Template tmpl(source);
    write_stdout(tmpl.render(vars).text);
  } catch (const tokenizer::jinja::Error& e) {
    throw InputError(o.template_file + ": " + printable(e.what(), 300));
  }
  return kExitOk;
}

int run_chat_template(const ChatTemplateOptions& o) {
  if (!o.vars_file.empty()) {
    if (o.template_file.empty()) throw InputError("chat-template: --vars needs -t FILE");
    return render_with_vars(o);
  }
  std::string source, bos = o.bos, eos = o.eos;
  if (!o.template_file.empty()) {
    source = read_whole_file(o.template_file, o.template_file + ": cannot read (-t)");
  } else {
    const auto vocab = tokenizer::Vocab::load(resolve_model_path(o.model));
    source = vocab.chat_template();
    if (bos.empty() && vocab.bos() != tokenizer::kNoToken) bos = vocab.token_text(vocab.bos());
    if (eos.empty() && vocab.eos() != tokenizer::kNoToken) eos = vocab.token_text(vocab.eos());
  }
  if (o.source) {
    write_stdout(source);
    return kExitOk;
  }
  const auto messages = read_messages(o.messages_file);
  const auto tmpl = tokenizer::ChatTemplate::detect(source, bos, eos);
  const auto rendered = tmpl.render(messages, o.add_generation_prompt);
  if (o.marks) {
    // The rendered text's ranges that came from message contents, as [begin, length] pairs.
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& r : rendered.contents) arr.push_back({r.begin, r.len});
    write_stdout(arr.dump() + "\n");
    return kExitOk;
  }
  write_stdout(rendered.text);
  return kExitOk;
}

}  // namespace

void add_chat_template(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("chat-template", "Render a chat with a chat template (dev)");
  cmd->group("");  // not listed in --help
  auto o = std::make_shared<ChatTemplateOptions>();
  auto* model = cmd->add_option("-m,--model", o->model, "GGUF file whose template to use")
                    ->check(non_empty_path());
  cmd->add_option("-t,--template", o->template_file, "Jinja template file")->excludes(model);
  cmd->add_option("--messages", o->messages_file, "JSON array of {role, content} messages");
  cmd->add_option("--vars", o->vars_file, "JSON object of all the variables (with -t)");
  cmd->add_option("--bos", o->bos, "Text of bos_token");
  cmd->add_option("--eos", o->eos, "Text of eos_token");
  cmd->add_flag("--add-generation-prompt", o->add_generation_prompt,
                "Open an assistant turn at the end");
  cmd->add_flag("--source", o->source, "Print the template source instead");
  cmd->add_flag("--marks", o->marks, "Print the ranges of message contents (JSON) instead");
  cmd->callback([o, &action] { action = [o] { return run_chat_template(*o); }; });
}

}  // namespace lockstep::cli
