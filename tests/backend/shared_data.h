// The ../shared data the backend model tests read: models and the independent runtime's
// reference outputs. A missing file is an error (the test fails loudly), never a skip.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "model/model.h"

namespace lockstep::backend_test {

inline const std::string kModels = "../shared/models/";
inline const std::string kReference = "../shared/reference/";

inline nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("required shared test data is missing: " + path);
  return nlohmann::json::parse(in);
}

inline Model load_model(const std::string& file) {
  std::ifstream probe(kModels + file);
  if (!probe) throw std::runtime_error("required shared test model is missing: " + kModels + file);
  return Model::load(kModels + file);
}

}  // namespace lockstep::backend_test
