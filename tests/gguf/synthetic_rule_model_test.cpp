// The per-tensor type rule of make-model (llama.cpp's llama-quantize mix) checked against files
// that llama-quantize itself produced: ../shared/models/stories260K-{Q4_K_M,Q4_0,Q8_0}.gguf.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "gguf/gguf_reader.h"
#include "model/synthetic_quant_mix.h"

namespace lockstep::gguf_test {
namespace {

void expect_rule_matches(const std::string& file, const std::string& scheme_name,
                         const std::map<std::string, int>& type_counts) {
  SCOPED_TRACE(file);
  const auto f = gguf::GgufFile::open("../shared/models/" + file);  // throws if missing: fails
  const QuantScheme* q = find_quant_scheme(scheme_name);
  ASSERT_NE(q, nullptr);
  const int64_t n_layer = f.get_int("llama.block_count").value();
  const bool has_output = f.find_tensor("output.weight") != nullptr;
  std::map<std::string, int> counts;
  for (const auto& t : f.tensors()) {
    int layer = -1;
    std::sscanf(t.name.c_str(), "blk.%d.", &layer);
    const TensorType want = llama_cpp_tensor_type(*q, t.name, t.ne, layer, n_layer, has_output);
    EXPECT_EQ(tensor_type_name(uint32_t(want)), tensor_type_name(t.raw_type)) << t.name;
    counts[tensor_type_name(t.raw_type)]++;
  }
  EXPECT_EQ(counts, type_counts);  // as ../shared/models/README.md describes the files
  EXPECT_EQ(f.get_int("general.file_type").value(), q->file_type);
}

TEST(SyntheticRuleVsLlamaQuantize, Stories260K_Q4_K_M) {
  expect_rule_matches("stories260K-Q4_K_M.gguf", "q4_k_m",
                      {{"Q5_0", 29}, {"Q8_0", 3}, {"F16", 5}, {"F32", 11}});
}

TEST(SyntheticRuleVsLlamaQuantize, Stories260K_Q4_0) {
  expect_rule_matches("stories260K-Q4_0.gguf", "q4_0",
                      {{"Q4_0", 31}, {"Q8_0", 1}, {"F16", 5}, {"F32", 11}});
}

TEST(SyntheticRuleVsLlamaQuantize, Stories260K_Q8_0) {
  expect_rule_matches("stories260K-Q8_0.gguf", "q8_0", {{"Q8_0", 32}, {"F16", 5}, {"F32", 11}});
}

}  // namespace
}  // namespace lockstep::gguf_test
