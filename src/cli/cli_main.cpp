#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "util/error.h"

namespace lockstep::cli {

namespace {

// llama.cpp spells some flags with one dash and several letters, which CLI11 would read as a
// short flag with its value attached (-ngl as -n gl, -fa as -f a); these are rewritten first.
const std::map<std::string, std::string>& llama_cpp_spellings() {
  static const std::map<std::string, std::string> m = {{"-ngl", "--n-gpu-layers"},
                                                       {"-fa", "--flash-attn"}};
  return m;
}

// llama.cpp flags lockstep has no counterpart for, by name without dashes, and what lockstep
// lacks (or offers instead). The one-dash, several-letter ones are caught before parsing.
const std::map<std::string, std::string>& llama_cpp_missing() {
  static const std::map<std::string, std::string> m = [] {
    std::map<std::string, std::string> h;
    auto add = [&h](std::initializer_list<const char*> names, const char* what) {
      for (const char* n : names) h[n] = what;
    };
    add({"cnv", "conversation", "i", "interactive", "if", "interactive-first"},
        "interactive mode in run; `lockstep chat` is the conversation");
    add({"hf", "hfr", "hf-repo", "hff", "hf-file", "mu", "model-url"},
        "model downloads; give a local GGUF file with -m");
    add({"mirostat", "mirostat-lr", "mirostat-ent"}, "mirostat sampling");
    add({"typical"}, "typical sampling");
    add({"grammar", "grammar-file", "json-schema", "j"}, "grammar-constrained sampling");
    add({"lora", "lora-scaled"}, "LoRA adapters");
    add({"ctk", "cache-type-k", "ctv", "cache-type-v"},
        "KV cache type choice (cpu keeps F16, cpu-ref F32)");
    add({"mlock", "mmap", "no-mmap"}, "memory-mapping knobs");
    add({"ub", "ubatch-size"}, "micro-batch knob");
    add({"sm", "split-mode", "ts", "tensor-split", "mg", "main-gpu", "dev", "device"},
        "multi-GPU placement; --backend cuda uses one GPU");
    add({"ctx-shift", "context-shift", "keep", "n-keep"},
        "context shifting; chat offers /clear when the context is full");
    add({"nkvo", "no-kv-offload"}, "KV cache offload knob; the cache lives with the backend");
    return h;
  }();
  return m;
}

bool is_one_dash_word(const std::string& a) {
  return a.size() > 2 && a[0] == '-' && a[1] != '-' &&
         std::isalpha(static_cast<unsigned char>(a[1]));
}

std::string strip_dashes(std::string s) {
  if (const auto eq = s.find('='); eq != std::string::npos) s.resize(eq);
  return s.substr(std::min(s.find_first_not_of('-'), s.size()));
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The closest name among `names` to `word` when close enough to be a typo, else "".
std::string closest(const std::string& word, const std::vector<std::string>& names) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& n : names) {
    const size_t d = edit_distance(word, n);
    const size_t allowed = std::clamp<size_t>(n.size() / 4, 1, 3);
    if (d <= allowed && d < best_d) best = n, best_d = d;
  }
  return best;
}

std::vector<std::string> flag_names(const CLI::App& cmd) {
  std::vector<std::string> names;
  for (const CLI::Option* opt : cmd.get_options()) {
    for (const auto& l : opt->get_lnames()) names.push_back("--" + l);
    for (const auto& s : opt->get_snames()) names.push_back("-" + s);
  }
  return names;
}

std::vector<std::string> command_names(CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    names.push_back(sub->get_name());
  return names;
}

CLI::App* find_command(CLI::App& app, const std::string& name) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_name() == name) return sub;
  return nullptr;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// "unknown flag --x (lockstep has no ...)", with a "did you mean" for a near miss.
std::string unknown_flag_message(const std::string& flag, const CLI::App* cmd) {
  const std::string where = cmd ? cmd->get_name() : std::string();
  std::string msg = "unknown flag " + flag;
  const auto& missing = llama_cpp_missing();
  if (auto it = missing.find(strip_dashes(flag)); it != missing.end()) {
    msg += " (lockstep has no " + it->second + ")";
  } else {
    msg += where.empty() ? " (lockstep has no such flag)"
                         : " (lockstep has no such flag for '" + where + "')";
    if (cmd) {
      std::string word = flag.substr(0, flag.find('='));
      if (auto near = closest(word, flag_names(*cmd)); !near.empty())
        return msg + "; did you mean " + near + "?";
    }
  }
  return msg + "; see lockstep " + (where.empty() ? "" : where + " ") + "--help";
}

std::string unknown_command_message(const std::string& name, CLI::App& app) {
  std::string msg = "unknown command '" + name + "'; commands are: " + join(command_names(app));
  if (auto near = closest(name, command_names(app)); !near.empty())
    msg += " (did you mean " + near + "?)";
  return msg;
}

bool is_number(const std::string& s) {
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return !s.empty() && end && *end == '\0';
}

// Whether the arguments ask for JSON output from a command that has --json; errors are then
// JSON objects on stdout as well.
bool wants_json(const std::vector<std::string>& args, const CLI::App* cmd) {
  if (!cmd || !cmd->get_option_no_throw("--json")) return false;
  const bool has_output = cmd->get_option_no_throw("--output") != nullptr;
  for (size_t k = 0; k < args.size() && args[k] != "--"; ++k) {
    const std::string& a = args[k];
    if (a == "--json") return true;
    if (!has_output) continue;
    if (a == "-ojson" || a == "-o=json" || a == "--output=json") return true;
    if ((a == "-o" || a == "--output") && k + 1 < args.size() && args[k + 1] == "json") return true;
  }
  return false;
}

const char* error_type(int code) {
  switch (code) {
    case kExitBadInput:
      return "input";
    case kExitParity:
      return "parity";
    case kExitDevice:
      return "device";
    default:
      return "runtime";
  }
}

void write_json_error(const std::string& message, int code, const char* type) {
  nlohmann::ordered_json j;
  j["error"] = {{"message", message}, {"code", code}, {"type", type}};
  const std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

int usage_error(const std::string& message, bool json) {
  std::fprintf(stderr, "lockstep: usage error: %s\n", one_line(message).c_str());
  if (json) write_json_error(message, kExitBadInput, "usage");
  return kExitBadInput;
}

}  // namespace

int run_main(int argc, char** argv) {
  CLI::App app{
      "lockstep: GGUF language models on CPU and GPU, every GPU path proven against the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lockstep 0.1.0");
  Action action;
  add_inspect(app, action);
  add_make_model(app, action);
  add_tokenize(app, action);
  add_run(app, action);
  add_chat(app, action);
  add_bench(app, action);
  add_parity(app, action);
  add_qa(app, action);
#ifdef LOCKSTEP_HAVE_SERVER
  add_serve(app, action);
#else
  app.add_subcommand("serve", "HTTP server (not in this build: cpp-httplib was not found)")
      ->allow_extras()
      ->callback([&action] {
        action = []() -> int {
          throw Error("this lockstep was built without cpp-httplib, so it cannot serve "
                      "(install libcpp-httplib-dev and rebuild)");
        };
      });
#endif
  add_chat_template(app, action);
  add_perplexity(app, action);

  std::vector<std::string> args(argv + 1, argv + argc);
  // The command is the first argument; flags of the app itself (--help, --version) come alone.
  std::string command_name;
  if (!args.empty() && !args[0].empty() && args[0][0] != '-') command_name = args[0];
  CLI::App* command = command_name.empty() ? nullptr : find_command(app, command_name);
  const bool json = wants_json(args, command);
  if (!command_name.empty() && !command)
    return usage_error(unknown_command_message(command_name, app), json);

  std::map<std::string, std::string> rewritten;  // new spelling -> what the user wrote
  for (size_t k = 1; k < args.size() && args[k] != "--"; ++k) {
    if (!is_one_dash_word(args[k])) continue;
    const std::string word = args[k].substr(0, args[k].find('='));
    const std::string value = args[k].substr(word.size());
    auto it = llama_cpp_spellings().find(word);
    // Only for a command that has the flag: elsewhere -fa may still be -f a.
    if (it != llama_cpp_spellings().end() && command && command->get_option_no_throw(it->second)) {
      rewritten[it->second] = word;
      args[k] = it->second + value;
    } else if (llama_cpp_missing().count(word.substr(1))) {
      return usage_error(unknown_flag_message(word, command), json);
    }
  }

  std::vector<char*> new_argv = {argv[0]};
  for (auto& a : args) new_argv.push_back(a.data());
  try {
    try {
      app.parse(int(new_argv.size()), new_argv.data());
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);  // help goes to stdout, exit 0
    } catch (const CLI::CallForAllHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app.exit(e);
    } catch (const CLI::ExtrasError&) {
      // CLI11 lists the extras last first ("not expected: 99 --n-gpu-layers"); name the first
      // unknown flag, the way it was typed, instead.
      const std::vector<std::string> rest = command ? command->remaining() : app.remaining(true);
      for (const auto& r : rest) {
        if (r.size() < 2 || r[0] != '-' || is_number(r)) continue;
        auto it = rewritten.find(r.substr(0, r.find('=')));
        return usage_error(unknown_flag_message(it == rewritten.end() ? r : it->second, command),
                           json);
      }
      return usage_error(
          "unexpected argument '" + (rest.empty() ? std::string() : rest.front()) + "'" +
              (command ? " for '" + command->get_name() + "'" : std::string()) + "; see lockstep " +
              (command ? command->get_name() + " " : std::string()) + "--help",
          json);
    } catch (const CLI::ParseError& e) {
      if (!command)
        return usage_error("no command given; commands are: " + join(command_names(app)), json);
      return usage_error(
          std::string(e.what()) + " (see lockstep " + command->get_name() + " --help)", json);
    }
    return action ? action() : kExitBadInput;
  } catch (const Error& e) {
    // main() writes the stderr line and returns the exit code; the JSON object comes first.
    if (json) write_json_error(e.what(), e.exit_code(), error_type(e.exit_code()));
    throw;
  } catch (const std::exception& e) {
    if (json) write_json_error(std::string("internal error: ") + e.what(), kExitRuntime, "runtime");
    throw;
  }
}

}  // namespace lockstep::cli
