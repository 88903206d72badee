#include "common/model_paths.h"

#include <filesystem>

#include "engine/model_source.h"

namespace lockstep::test {

std::string smollm2_path() {
  for (const std::string& p : {std::string("models/") + kDefaultModelFile, default_model_path()})
    if (std::filesystem::exists(p)) return p;
  return "";
}

std::string gemma3_270m_path() {
  const std::string name = "gemma-3-270m-q4_k_m.gguf";
  const std::string cache_dir =
      std::filesystem::path(default_model_path()).parent_path().string();  // the models cache
  for (const std::string& p : {"models/" + name, cache_dir + "/" + name})
    if (std::filesystem::exists(p)) return p;
  return "";
}

}  // namespace lockstep::test
