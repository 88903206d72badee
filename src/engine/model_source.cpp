#include "engine/model_source.h"

#include <cstdlib>
#include <filesystem>
#include <map>

#include "util/error.h"

namespace lockstep {

std::string default_model_path() {
  if (const char* env = std::getenv("LOCKSTEP_MODEL"); env && *env) return env;
  std::string cache;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    cache = xdg;
  } else {
    const char* home = std::getenv("HOME");
    cache = std::string(home && *home ? home : ".") + "/.cache";
  }
  return cache + "/lockstep/models/" + kDefaultModelFile;
}

std::string resolve_model_path(const std::string& flag) {
  if (!flag.empty()) return flag;
  const std::string path = default_model_path();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    const bool from_env = std::getenv("LOCKSTEP_MODEL") && *std::getenv("LOCKSTEP_MODEL");
    throw InputError(
        "no model given (-m) and the default model " + path + " does not exist" +
        (from_env ? " ($LOCKSTEP_MODEL)" : "; run scripts/get-default-model.sh to download it"));
  }
  return path;
}

// llama.cpp's llama_ftype values (llama.h) as stored in general.file_type.
const char* ftype_name(int64_t ftype) {
  static const std::map<int64_t, const char*> names = {
      {0, "F32"},      {1, "F16"},      {2, "Q4_0"},       {3, "Q4_1"},    {7, "Q8_0"},
      {8, "Q5_0"},     {9, "Q5_1"},     {10, "Q2_K"},      {11, "Q3_K_S"}, {12, "Q3_K_M"},
      {13, "Q3_K_L"},  {14, "Q4_K_S"},  {15, "Q4_K_M"},    {16, "Q5_K_S"}, {17, "Q5_K_M"},
      {18, "Q6_K"},    {19, "IQ2_XXS"}, {20, "IQ2_XS"},    {21, "Q2_K_S"}, {22, "IQ3_XS"},
      {23, "IQ3_XXS"}, {24, "IQ1_S"},   {25, "IQ4_NL"},    {26, "IQ3_S"},  {27, "IQ3_M"},
      {28, "IQ2_S"},   {29, "IQ2_M"},   {30, "IQ4_XS"},    {31, "IQ1_M"},  {32, "BF16"},
      {36, "TQ1_0"},   {37, "TQ2_0"},   {38, "MXFP4_MOE"},
  };
  // 1024 marks a type llama.cpp guessed rather than read.
  auto it = names.find(ftype & ~int64_t(1024));
  return it == names.end() ? nullptr : it->second;
}

namespace {

void for_each_weight(const Model& m, const auto& fn) {
  fn(m.tok_embd);
  fn(m.output_norm);
  if (m.output.data != m.tok_embd.data) fn(m.output);
  for (const auto& L : m.layers)
    for (const WeightView* w : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv,
                                &L.ffn_norm, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      fn(*w);
}

uint64_t bytes_of(const WeightView& w) {
  return w.present() ? w.row_bytes * uint64_t(w.rows) : 0;
}

}  // namespace

std::string file_type_name(const Model& model) {
  if (auto ft = model.file->get_int("general.file_type"))
    if (const char* name = ftype_name(*ft)) return name;
  std::map<std::string, uint64_t> bytes_by_type;
  for_each_weight(model, [&](const WeightView& w) {
    if (w.present() && w.rows > 1) bytes_by_type[tensor_type_info(w.type).name] += bytes_of(w);
  });
  std::string best = "unknown";
  uint64_t most = 0;
  for (const auto& [name, bytes] : bytes_by_type)
    if (bytes > most) most = bytes, best = name;
  return "mostly " + best;
}

uint64_t weight_bytes_per_token(const Model& model) {
  uint64_t total = 0;
  for_each_weight(model, [&](const WeightView& w) { total += bytes_of(w); });
  // The embedding is looked up (one row), but when tied it is also the output matrix, read whole.
  const bool tied = model.output.data == model.tok_embd.data;
  if (!tied)
    total -= bytes_of(model.tok_embd) - model.tok_embd.row_bytes;
  else
    total += model.tok_embd.row_bytes;
  return total;
}

ModelSummary summarize(const Model& model, const std::string& path) {
  ModelSummary s;
  s.path = path;
  s.name = model.file->get_string("general.name")
               .value_or(std::filesystem::path(path).filename().string());
  s.architecture = model.hp.arch_name;
  s.file_type = file_type_name(model);
  for_each_weight(model, [&](const WeightView& w) {
    if (w.present()) s.n_params += w.cols * w.rows;
  });
  s.file_bytes = model.file->file_size();
  s.n_vocab = model.hp.n_vocab;
  s.n_embd = model.hp.n_embd;
  s.n_layer = model.hp.n_layer;
  s.n_ctx_train = model.hp.n_ctx_train;
  return s;
}

}  // namespace lockstep
