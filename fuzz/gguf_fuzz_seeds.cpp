// Writes a handful of small, valid GGUF files that cover the format's features (every value
// type, nested arrays, non-default alignment, several tensor types, vocab-only) as the starting
// corpus for gguf_reader_fuzz. Usage: gguf_fuzz_seeds OUT_DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gguf/gguf_writer.h"

using lockstep::TensorType;
using lockstep::gguf::GgufWriter;
using lockstep::gguf::Value;
using lockstep::gguf::ValueType;

namespace {

std::vector<uint8_t> pattern(uint64_t n, uint8_t salt) {
  std::vector<uint8_t> b(n);
  for (uint64_t k = 0; k < n; ++k) b[k] = uint8_t(k * 37 + salt);
  return b;
}

Value scalar(ValueType t, uint64_t u, int64_t i, double f) {
  Value v;
  v.type = t;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}

void save(const std::string& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  std::ofstream(dir + "/" + name, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_fuzz_seeds OUT_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];

  {  // every scalar type, strings, nested arrays, two tensors
    GgufWriter w;
    w.set("general.architecture", Value::of_string("llama"));
    w.set("u8", scalar(ValueType::UINT8, 200, 0, 0));
    w.set("i8", scalar(ValueType::INT8, 0, -100, 0));
    w.set("u16", scalar(ValueType::UINT16, 60000, 0, 0));
    w.set("i16", scalar(ValueType::INT16, 0, -30000, 0));
    w.set("u32", Value::of_u32(4000000000u));
    w.set("i32", Value::of_i32(-2000000000));
    w.set("u64", Value::of_u64(1ull << 60));
    w.set("i64", scalar(ValueType::INT64, 0, -(1ll << 60), 0));
    w.set("f32", Value::of_f32(1.5f));
    w.set("f64", scalar(ValueType::FLOAT64, 0, 0, -2.25));
    w.set("bool", Value::of_bool(true));
    w.set("str", Value::of_string(std::string("a\0b\xc3\xa9", 5)));
    w.set("strs", Value::of_strings({"x", "", "yz"}));
    w.set("nested",
          Value::of_array(ValueType::ARRAY, {Value::of_i32s({1, 2}), Value::of_i32s({})}));
    w.add_tensor("a", TensorType::F32, {4, 2}, pattern(32, 1));
    w.add_tensor("b", TensorType::Q8_0, {32, 1}, pattern(34, 2));
    save(dir, "types.gguf", w.to_bytes());
  }
  {  // alignment 64, 3-D and 4-D tensors, K-quant block
    GgufWriter w;
    w.set_alignment(64);
    w.set("general.name", Value::of_string("aligned"));
    w.add_tensor("k", TensorType::Q4_K, {256, 1}, pattern(144, 3));
    w.add_tensor("c", TensorType::F16, {2, 3, 4}, pattern(48, 4));
    w.add_tensor("d", TensorType::BF16, {1, 2, 1, 2}, pattern(8, 5));
    save(dir, "aligned64.gguf", w.to_bytes());
  }
  {  // vocab-only: metadata and no tensors
    GgufWriter w;
    w.set("tokenizer.ggml.model", Value::of_string("gpt2"));
    w.set("tokenizer.ggml.tokens", Value::of_strings({"a", "b", "ab"}));
    w.set("tokenizer.ggml.merges", Value::of_strings({"a b"}));
    w.set("tokenizer.ggml.token_type", Value::of_i32s({1, 1, 1}));
    save(dir, "vocab_only.gguf", w.to_bytes());
  }
  {  // empty file apart from the header
    GgufWriter w;
    save(dir, "empty.gguf", w.to_bytes());
  }
  return 0;
}
