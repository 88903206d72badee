#include "cli/cli_models_util.h"

#include <fstream>
#include <map>
#include <stdexcept>

#include "common/cli_process_util.h"
#include "engine/chain_model_util.h"

namespace lockstep::test {

const std::string& chain_model_path() {
  static const std::string path = [] {
    const std::string p = temp_dir() + "/chain.gguf";
    const auto bytes = chain_model_bytes();
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }();
  return path;
}

const std::string& tiny_model_path(const std::string& quant) {
  static std::map<std::string, std::string> made;
  auto it = made.find(quant);
  if (it != made.end()) return it->second;
  const std::string p = temp_dir() + "/tiny-" + quant + ".gguf";
  const auto r = run_lockstep({"make-model", "--arch", "llama", "--preset", "tiny", "--quant",
                               quant, "--seed", "1", "-o", p, "-t", "1"});
  if (r.exit_code != 0) throw std::runtime_error("make-model failed: " + r.err);
  return made.emplace(quant, p).first->second;
}

}  // namespace lockstep::test
