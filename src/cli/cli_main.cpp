#include <cstdio>

#include "cli/commands.h"
#include "util/error.h"

namespace lockstep::cli {

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
  add_serve(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // help goes to stdout, exit 0
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lockstep: usage error: %s (see --help)\n", e.what());
    return kExitBadInput;
  }
  return action ? action() : kExitBadInput;
}

}  // namespace lockstep::cli
