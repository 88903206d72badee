// Checks against the llama.cpp-made reference set in ../shared/quant (see its README.md):
// dequantization of every X.gguf against X.dequant.gguf, and quantization of source.f32.gguf
// against the bytes llama.cpp wrote. A missing file is a failure, never a skip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gguf/gguf_reader.h"
#include "quant/quantize.h"
#include "util/error.h"

namespace {

using lockstep::TensorType;
using lockstep::gguf::GgufFile;
using lockstep::gguf::TensorInfo;

const std::string kDir = "../shared/quant/";

GgufFile open_shared(const std::string& name) {
  const std::string path = kDir + name;
  if (!std::filesystem::exists(path))
    throw std::runtime_error("missing reference file " + path +
                             " (tests run from the repo root; ../shared must be present)");
  return GgufFile::open(path);
}

struct Case {
  const char* file;
  TensorType type;
};
const Case kCases[] = {
    {"q4_0", TensorType::Q4_0}, {"q4_1", TensorType::Q4_1}, {"q5_0", TensorType::Q5_0},
    {"q5_1", TensorType::Q5_1}, {"q8_0", TensorType::Q8_0}, {"q2_k", TensorType::Q2_K},
    {"q3_k", TensorType::Q3_K}, {"q4_k", TensorType::Q4_K}, {"q5_k", TensorType::Q5_K},
    {"q6_k", TensorType::Q6_K}, {"f16", TensorType::F16},   {"bf16", TensorType::BF16},
};
const char* const k2dNames[] = {"token_embd.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
                                "blk.0.ffn_down.weight"};

class ReferenceSet : public ::testing::TestWithParam<Case> {};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.file;
}

// (a) Every tensor of X.gguf dequantizes to the tensor of the same name in X.dequant.gguf.
TEST_P(ReferenceSet, DequantizeMatchesLlamaCpp) {
  const Case c = GetParam();
  GgufFile q = open_shared(std::string(c.file) + ".gguf");
  GgufFile ref = open_shared(std::string(c.file) + ".dequant.gguf");
  ASSERT_EQ(q.tensors().size(), 6u);
  int n_quantized = 0;
  for (const TensorInfo& t : q.tensors()) {
    SCOPED_TRACE(t.name);
    const TensorInfo* r = ref.find_tensor(t.name);
    ASSERT_NE(r, nullptr);
    ASSERT_EQ(r->type, TensorType::F32);
    ASSERT_EQ(r->ne, t.ne);
    if (t.ne.size() == 2) {
      EXPECT_EQ(t.type, c.type);
      ++n_quantized;
    }
    const int64_t ne0 = t.ne[0], rows = t.rows();
    const uint64_t rb = lockstep::row_bytes(t.type, ne0).value();
    ASSERT_EQ(rb * uint64_t(rows), t.n_bytes);
    std::vector<float> out(size_t(ne0 * rows), std::nanf(""));
    for (int64_t r0 = 0; r0 < rows; ++r0)
      lockstep::dequantize_row(t.type, t.data + r0 * rb, out.data() + r0 * ne0, ne0);
    std::vector<float> expect(out.size());
    std::memcpy(expect.data(), r->data, expect.size() * 4);
    double max_ref = 0, max_diff = 0;
    size_t n_bits_differ = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_TRUE(std::isfinite(out[i])) << "element " << i;
      max_ref = std::max(max_ref, std::fabs(double(expect[i])));
      max_diff = std::max(max_diff, std::fabs(double(out[i]) - double(expect[i])));
      n_bits_differ += std::memcmp(&out[i], &expect[i], 4) != 0;
    }
    EXPECT_GT(max_ref, 0.0);
    EXPECT_LE(max_diff, 1e-6 * max_ref);
    // llama.cpp and gguf-py agree bit for bit on these files (README "Verification"); so do we.
    EXPECT_EQ(n_bits_differ, 0u);
  }
  EXPECT_EQ(n_quantized, 4);
}

INSTANTIATE_TEST_SUITE_P(Quant, ReferenceSet, ::testing::ValuesIn(kCases), case_name);

// Quantizes every 2-D tensor of source.f32.gguf to `type` and compares with X.gguf.
// Returns the number of rows that differ; *n_rows the total.
size_t quantize_and_compare(const Case& c, size_t* n_rows) {
  GgufFile src = open_shared("source.f32.gguf");
  GgufFile q = open_shared(std::string(c.file) + ".gguf");
  size_t differ = 0;
  *n_rows = 0;
  for (const char* name : k2dNames) {
    const TensorInfo* s = src.find_tensor(name);
    const TensorInfo* t = q.find_tensor(name);
    EXPECT_TRUE(s && t) << name;
    if (!s || !t) return SIZE_MAX;
    EXPECT_EQ(s->type, TensorType::F32);
    EXPECT_EQ(t->type, c.type);
    const int64_t ne0 = s->ne[0];
    const uint64_t rb = lockstep::row_bytes(c.type, ne0).value();
    std::vector<float> row(static_cast<size_t>(ne0));
    std::vector<uint8_t> out(rb);
    for (int64_t r = 0; r < s->rows(); ++r) {
      std::memcpy(row.data(), s->data + r * ne0 * 4, size_t(ne0) * 4);
      std::memset(out.data(), 0xA5, out.size());
      lockstep::quantize_row(c.type, row.data(), out.data(), ne0);
      differ += std::memcmp(out.data(), t->data + r * rb, rb) != 0;
      ++*n_rows;
    }
  }
  return differ;
}

// (b) Byte identity with llama.cpp's reference quantizers.
class ByteIdentical : public ::testing::TestWithParam<Case> {};
TEST_P(ByteIdentical, QuantizeSourceMatchesLlamaCpp) {
  size_t rows = 0;
  EXPECT_EQ(quantize_and_compare(GetParam(), &rows), 0u);
  EXPECT_EQ(rows, 272u + 64 + 64 + 256);
}
INSTANTIATE_TEST_SUITE_P(
    Quant, ByteIdentical,
    ::testing::Values(Case{"q4_0", TensorType::Q4_0}, Case{"q4_1", TensorType::Q4_1},
                      Case{"q5_0", TensorType::Q5_0}, Case{"q5_1", TensorType::Q5_1},
                      Case{"q8_0", TensorType::Q8_0}, Case{"f16", TensorType::F16},
                      Case{"bf16", TensorType::BF16}),
    case_name);

// The K quantizers are not required to be byte-identical, but they follow llama.cpp's reference
// quantizer (no importance matrix), which is what made q4_k/q5_k/q6_k.gguf (llama-quantize
// --pure without imatrix calls quantize_row_*_ref). They match on these files.
class KQuantBytes : public ::testing::TestWithParam<Case> {};
TEST_P(KQuantBytes, QuantizeSourceMatchesLlamaCpp) {
  size_t rows = 0;
  EXPECT_EQ(quantize_and_compare(GetParam(), &rows), 0u);
  EXPECT_EQ(rows, 656u);
}
INSTANTIATE_TEST_SUITE_P(Quant, KQuantBytes,
                         ::testing::Values(Case{"q4_k", TensorType::Q4_K},
                                           Case{"q5_k", TensorType::Q5_K},
                                           Case{"q6_k", TensorType::Q6_K}),
                         case_name);

// (e) Unsupported types throw an InputError that names the type.
TEST(QuantErrors, UnsupportedTypeThrowsNamingIt) {
  std::vector<uint8_t> buf(1024);
  std::vector<float> f(256, 1.0f);
  auto expect_named = [](auto&& fn, const std::string& name) {
    try {
      fn();
      ADD_FAILURE() << "no exception for " << name;
    } catch (const lockstep::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  expect_named([&] { lockstep::dequantize_row(TensorType(16), buf.data(), f.data(), 256); },
               "IQ2_XXS");
  expect_named([&] { lockstep::dequantize_row(TensorType::Q8_1, buf.data(), f.data(), 32); },
               "Q8_1");
  expect_named([&] { lockstep::dequantize_row(TensorType::I32, buf.data(), f.data(), 4); }, "I32");
  expect_named([&] { lockstep::quantize_row(TensorType::Q2_K, f.data(), buf.data(), 256); },
               "Q2_K");
  expect_named([&] { lockstep::quantize_row(TensorType::Q3_K, f.data(), buf.data(), 256); },
               "Q3_K");
  expect_named([&] { lockstep::quantize_row(TensorType(23), f.data(), buf.data(), 256); },
               "IQ4_XS");
  expect_named([&] { lockstep::dequantize_row(TensorType(999), buf.data(), f.data(), 1); },
               "unknown(999)");
  // A row length that is not a multiple of the block size is an error too.
  expect_named([&] { lockstep::quantize_row(TensorType::Q4_K, f.data(), buf.data(), 128); },
               "Q4_K");
}

}  // namespace
