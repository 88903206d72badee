// Subcommands of the lockstep CLI. Each lives in its own cmd_*.cpp and registers itself on the
// app; its action runs after parsing and returns the process exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace lockstep::cli {

using Action = std::function<int()>;

int run_main(int argc, char** argv);

void add_inspect(CLI::App& app, Action& action);
void add_make_model(CLI::App& app, Action& action);
void add_tokenize(CLI::App& app, Action& action);
void add_run(CLI::App& app, Action& action);
void add_chat(CLI::App& app, Action& action);
void add_bench(CLI::App& app, Action& action);
void add_parity(CLI::App& app, Action& action);
void add_qa(CLI::App& app, Action& action);
void add_serve(CLI::App& app, Action& action);
void add_chat_template(CLI::App& app, Action& action);
void add_perplexity(CLI::App& app, Action& action);

}  // namespace lockstep::cli
