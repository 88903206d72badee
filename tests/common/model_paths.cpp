#include "common/model_paths.h"

#include <filesystem>

#include "engine/model_source.h"

namespace lockstep::test {

std::string smollm2_path() {
  for (const std::string& p : {std::string("models/") + kDefaultModelFile, default_model_path()})
    if (std::filesystem::exists(p)) return p;
  return "";
}

}  // namespace lockstep::test
