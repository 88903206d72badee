// `lockstep inspect FILE [--json]` (placeholder until the inspect work lands).
#include <cstdio>

#include "cli/commands.h"
#include "gguf/gguf_reader.h"

namespace lockstep::cli {

void add_inspect(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("inspect", "Describe a GGUF file and validate it");
  auto path = std::make_shared<std::string>();
  cmd->add_option("file", *path, "GGUF file")->required();
  cmd->callback([&action, path] {
    action = [path] {
      auto f = gguf::GgufFile::open(*path);
      std::printf("version %u, %zu metadata keys, %zu tensors\n", f.version(), f.metadata().size(),
                  f.tensors().size());
      return 0;
    };
  });
}

void add_make_model(CLI::App& app, Action& action) {
  (void)app;
  (void)action;
}

}  // namespace lockstep::cli
