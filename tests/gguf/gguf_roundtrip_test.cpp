// GgufWriter -> GgufFile round trips: every metadata value type (arrays of arrays, strings with
// NULs and UTF-8), alignments other than 32, and llama.cpp's layout conventions checked byte by
// byte against an independent hand-built image.
#include <gtest/gtest.h>
#include <unistd.h>
#include <fstream>
#include <iterator>

#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_test_util.h"
#include "gguf/gguf_writer.h"
#include "util/error.h"

namespace lockstep::gguf_test {
namespace {

using gguf::GgufFile;
using gguf::GgufWriter;
using gguf::Value;
using gguf::ValueType;

Value scalar(ValueType t, uint64_t u, int64_t i, double f) {
  Value v;
  v.type = t;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}

// Structural equality of two values (type, payload, element type, elements).
void expect_same(const Value& a, const Value& b, const std::string& where) {
  ASSERT_EQ(a.type, b.type) << where;
  switch (a.type) {
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
    case ValueType::BOOL:
      EXPECT_EQ(a.u, b.u) << where;
      break;
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
      EXPECT_EQ(a.i, b.i) << where;
      break;
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      EXPECT_EQ(std::memcmp(&a.f, &b.f, sizeof a.f), 0) << where << ": " << a.f << " vs " << b.f;
      break;
    case ValueType::STRING:
      EXPECT_EQ(a.s, b.s) << where;
      break;
    case ValueType::ARRAY:
      ASSERT_EQ(a.elem_type, b.elem_type) << where;
      ASSERT_EQ(a.array.size(), b.array.size()) << where;
      for (size_t k = 0; k < a.array.size(); ++k)
        expect_same(a.array[k], b.array[k], where + "[" + std::to_string(k) + "]");
      break;
  }
}

std::vector<std::pair<std::string, Value>> every_value_type(std::mt19937_64& rng) {
  std::vector<std::pair<std::string, Value>> kv;
  auto r = [&] { return rng(); };
  kv.push_back({"t.u8", scalar(ValueType::UINT8, r() & 0xff, 0, 0)});
  kv.push_back({"t.i8", scalar(ValueType::INT8, 0, int8_t(r()), 0)});
  kv.push_back({"t.u16", scalar(ValueType::UINT16, r() & 0xffff, 0, 0)});
  kv.push_back({"t.i16", scalar(ValueType::INT16, 0, int16_t(r()), 0)});
  kv.push_back({"t.u32", Value::of_u32(uint32_t(r()))});
  kv.push_back({"t.i32", Value::of_i32(int32_t(r()))});
  kv.push_back({"t.u64", Value::of_u64(r())});
  kv.push_back({"t.i64", scalar(ValueType::INT64, 0, int64_t(r()), 0)});
  kv.push_back({"t.i64.min", scalar(ValueType::INT64, 0, std::numeric_limits<int64_t>::min(), 0)});
  // f32 values are stored as floats; pick values that a float holds exactly.
  kv.push_back({"t.f32", Value::of_f32(float(int32_t(r()) % 100000) / 64.0f)});
  kv.push_back({"t.f32.inf", Value::of_f32(-std::numeric_limits<float>::infinity())});
  kv.push_back({"t.f64", scalar(ValueType::FLOAT64, 0, 0, double(int64_t(r())) * 1e-9)});
  kv.push_back({"t.f64.denorm", scalar(ValueType::FLOAT64, 0, 0, 4.9e-324)});
  kv.push_back({"t.bool.true", Value::of_bool(true)});
  kv.push_back({"t.bool.false", Value::of_bool(false)});
  kv.push_back({"t.str.empty", Value::of_string("")});
  kv.push_back({"t.str.nul", Value::of_string(std::string("a\0b\0", 4))});
  kv.push_back(
      {"t.str.utf8", Value::of_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad")});
  kv.push_back({"t.str.invalid_utf8", Value::of_string("\xff\xfe\x80")});
  std::string big(70000, 'x');
  for (auto& c : big) c = char(r() & 0xff);
  kv.push_back({"t.str.big_binary", Value::of_string(big)});
  kv.push_back({"t.arr.empty", Value::of_array(ValueType::UINT8, {})});
  kv.push_back(
      {"t.arr.strings", Value::of_strings({"", "a\0b", "\xc4\xa0the", std::string(300, 'q')})});
  std::vector<float> fs(1000);
  for (auto& f : fs) f = float(int32_t(r()) % 1000) / 8.0f;
  kv.push_back({"t.arr.f32", Value::of_f32s(fs)});
  std::vector<Value> u16s;
  for (int k = 0; k < 17; ++k) u16s.push_back(scalar(ValueType::UINT16, r() & 0xffff, 0, 0));
  kv.push_back({"t.arr.u16", Value::of_array(ValueType::UINT16, u16s)});
  std::vector<Value> bools = {Value::of_bool(true), Value::of_bool(false), Value::of_bool(true)};
  kv.push_back({"t.arr.bool", Value::of_array(ValueType::BOOL, bools)});
  // Arrays of arrays, three levels, with different element types inside.
  Value inner1 = Value::of_i32s({1, -2, 3});
  Value inner2 = Value::of_array(ValueType::INT32, {});
  Value mid = Value::of_array(ValueType::ARRAY, {inner1, inner2});
  Value strs = Value::of_array(ValueType::ARRAY, {Value::of_strings({"x", "\xce\xbb"})});
  kv.push_back({"t.arr.nested", Value::of_array(ValueType::ARRAY, {mid, mid})});
  kv.push_back({"t.arr.nested_strings", strs});
  kv.push_back({"t.arr.of_empty_arrays",
                Value::of_array(ValueType::ARRAY, {Value::of_array(ValueType::FLOAT64, {})})});
  kv.push_back({"key with spaces and \xc3\xbc", Value::of_u32(7)});
  return kv;
}

TEST(GgufRoundTrip, EveryValueType) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto kv = every_value_type(rng);
  GgufWriter w;
  for (const auto& [k, v] : kv) w.set(k, v);
  auto f = GgufFile::from_bytes(w.to_bytes());
  EXPECT_EQ(f.version(), 3u);
  ASSERT_EQ(f.metadata().size(), kv.size());
  for (size_t k = 0; k < kv.size(); ++k) {
    EXPECT_EQ(f.metadata()[k].key, kv[k].first);  // insertion order is kept
    const Value* v = f.find(kv[k].first);
    ASSERT_NE(v, nullptr) << kv[k].first;
    expect_same(kv[k].second, *v, kv[k].first);
  }
  EXPECT_EQ(f.get_string("t.str.nul").value(), std::string("a\0b\0", 4));
  EXPECT_EQ(f.get_bool("t.bool.true").value(), true);
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufRoundTrip, SetReplacesAKeyInPlace) {
  GgufWriter w;
  w.set("a", Value::of_u32(1));
  w.set("b", Value::of_u32(2));
  w.set("a", Value::of_string("again"));
  auto f = GgufFile::from_bytes(w.to_bytes());
  ASSERT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata()[0].key, "a");
  EXPECT_EQ(f.get_string("a").value(), "again");
}

// Random tensor bytes for a layout test.
std::vector<uint8_t> random_bytes(uint64_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

struct TensorCase {
  std::string name;
  TensorType type;
  std::vector<int64_t> ne;
};

const std::vector<TensorCase> kLayoutTensors = {
    {"odd.f32", TensorType::F32, {3, 5}},         // 60 bytes: needs padding
    {"q8", TensorType::Q8_0, {64, 3}},            // 204 bytes
    {"k.q4k", TensorType::Q4_K, {256, 1, 1, 2}},  // 4-D, 288 bytes
    {"f16.3d", TensorType::F16, {7, 1, 3}},       // 42 bytes
    {"one", TensorType::BF16, {1}},               // 2 bytes
    {"blk.0.attn_q.weight", TensorType::Q6_K, {512, 2}},
};

// The layout llama.cpp writes, built by hand: header, kv, infos with offsets that are running
// sums of sizes padded to the alignment, zero padding to the alignment, data with zero padding
// after every tensor (the last one included).
std::vector<uint8_t> hand_built(uint32_t alignment, const std::vector<std::vector<uint8_t>>& data) {
  Bytes b;
  b.u32(0x46554747).u32(3).u64(kLayoutTensors.size()).u64(alignment == 32 ? 1 : 2);
  b.str("general.name").u32(8).str("layout");
  if (alignment != 32) b.str("general.alignment").u32(4).u32(alignment);
  uint64_t off = 0;
  for (size_t k = 0; k < kLayoutTensors.size(); ++k) {
    const auto& t = kLayoutTensors[k];
    b.str(t.name).u32(uint32_t(t.ne.size()));
    for (int64_t d : t.ne) b.u64(uint64_t(d));
    b.u32(uint32_t(t.type)).u64(off);
    off += (data[k].size() + alignment - 1) / alignment * alignment;
  }
  b.pad_to(alignment);
  for (const auto& d : data) b.raw(d).pad_to(alignment);
  return b.bytes();
}

class GgufLayout : public ::testing::TestWithParam<uint32_t> {};

TEST_P(GgufLayout, MatchesLlamaCppConventionsByteForByte) {
  const uint32_t alignment = GetParam();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  GgufWriter w;
  w.set("general.name", Value::of_string("layout"));
  w.set_alignment(alignment);
  std::vector<std::vector<uint8_t>> data;
  for (const auto& t : kLayoutTensors) {
    uint64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= uint64_t(t.ne[d]);
    data.push_back(random_bytes(*row_bytes(t.type, t.ne[0]) * rows, rng));
    w.add_tensor(t.name, t.type, t.ne, data.back());
  }
  const std::vector<uint8_t> bytes = w.to_bytes();
  EXPECT_EQ(bytes, hand_built(alignment, data));
  EXPECT_EQ(w.file_size(), bytes.size());

  auto f = GgufFile::from_bytes(bytes);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  ASSERT_EQ(f.tensors().size(), kLayoutTensors.size());
  for (size_t k = 0; k < kLayoutTensors.size(); ++k) {
    const auto& ti = f.tensors()[k];
    EXPECT_EQ(ti.name, kLayoutTensors[k].name);
    EXPECT_EQ(ti.type, kLayoutTensors[k].type);
    EXPECT_EQ(ti.ne, kLayoutTensors[k].ne);
    EXPECT_EQ(ti.offset % alignment, 0u) << ti.name;
    ASSERT_EQ(ti.n_bytes, data[k].size());
    EXPECT_EQ(std::memcmp(ti.data, data[k].data(), ti.n_bytes), 0) << ti.name;
    // The padding after each tensor is zero and runs to the next aligned offset.
    const uint64_t padded = (ti.n_bytes + alignment - 1) / alignment * alignment;
    for (uint64_t p = ti.n_bytes; p < padded; ++p) ASSERT_EQ(ti.data[p], 0) << ti.name << " +" << p;
    if (k + 1 < kLayoutTensors.size()) {
      EXPECT_EQ(f.tensors()[k + 1].offset, ti.offset + padded);
    } else {
      EXPECT_EQ(f.data_offset() + ti.offset + padded, f.file_size());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Alignments, GgufLayout, ::testing::Values(1u, 8u, 32u, 64u, 4096u));

TEST(GgufRoundTrip, WriteToDiskMatchesToBytesAndFillsEveryRowOnce) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  GgufWriter w;
  w.set("general.name", Value::of_string("disk"));
  w.set_alignment(64);
  std::vector<std::vector<uint8_t>> data;
  for (const auto& t : kLayoutTensors) {
    uint64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= uint64_t(t.ne[d]);
    data.push_back(random_bytes(*row_bytes(t.type, t.ne[0]) * rows, rng));
    w.add_tensor(t.name, t.type, t.ne);
  }
  auto fill = [&](size_t k, uint8_t* dst, uint64_t n) {
    ASSERT_EQ(n, data[k].size());
    std::memcpy(dst, data[k].data(), n);
  };
  const std::vector<uint8_t> expected = w.to_bytes(fill);
  for (int threads : {1, 3}) {
    const std::string path = temp_path("disk.gguf");
    w.write(path, fill, threads);
    EXPECT_EQ(read_file(path), expected) << threads << " threads";
    std::filesystem::remove(path);
  }
  // Row-chunked filling: tiny chunks so every tensor is split; each row must be written once.
  for (int threads : {1, 4}) {
    const std::string path = temp_path("rows.gguf");
    std::vector<std::vector<int>> seen(data.size());
    std::mutex mu;
    w.write_rows(
        path,
        [&](size_t k, int64_t r0, int64_t r1, uint8_t* dst) {
          const uint64_t rb = *row_bytes(kLayoutTensors[k].type, kLayoutTensors[k].ne[0]);
          std::memcpy(dst, data[k].data() + uint64_t(r0) * rb, uint64_t(r1 - r0) * rb);
          std::lock_guard<std::mutex> lock(mu);
          seen[k].resize(data[k].size() / rb);
          for (int64_t r = r0; r < r1; ++r) seen[k][size_t(r)]++;
        },
        threads, /*chunk_bytes=*/40);
    EXPECT_EQ(read_file(path), expected) << threads << " threads";
    for (size_t k = 0; k < seen.size(); ++k)
      for (int c : seen[k]) EXPECT_EQ(c, 1) << kLayoutTensors[k].name;
    std::filesystem::remove(path);
  }
}

TEST(GgufRoundTrip, FailedFillLeavesNoFile) {
  GgufWriter w;
  w.add_tensor("t", TensorType::F32, {4});
  const std::string path = temp_path("fail.gguf");
  EXPECT_THROW(w.write(
                   path, [](size_t, uint8_t*, uint64_t) { throw InputError("boom"); }, 2),
               InputError);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(getpid())));
  EXPECT_THROW(w.to_bytes(), Error);  // no bytes and no fill
}

// The temporary file is created exclusively and never through a symlink: a link planted where it
// would go (or at the old fixed name PATH.tmp) never has its target truncated or written.
TEST(GgufRoundTrip, PlantedSymlinksBesideTheTargetAreNotFollowed) {
  GgufWriter w;
  w.add_tensor("t", TensorType::F32, {4}, std::vector<uint8_t>(16, 7));
  const std::string victim = temp_path("victim.txt");
  const std::string path = temp_path("planted.gguf");
  auto write_victim = [&] { std::ofstream(victim, std::ios::trunc) << "precious"; };
  auto victim_text = [&] {
    std::ifstream in(victim);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  write_victim();
  std::filesystem::create_symlink(victim, path + ".tmp");
  w.write(path);
  EXPECT_EQ(victim_text(), "precious");
  EXPECT_EQ(read_file(path), w.to_bytes());

  const std::string own_tmp = path + ".tmp." + std::to_string(getpid());
  std::filesystem::create_symlink(victim, own_tmp);
  try {
    w.write(path);
    ADD_FAILURE() << "wrote through a planted link";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(own_tmp + ": cannot create"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(victim_text(), "precious");
  for (const std::string& left : {own_tmp, path + ".tmp", path, victim})
    std::filesystem::remove(left);
}

TEST(GgufRoundTrip, WriterRejectsShapesGgmlCannotHold) {
  GgufWriter w;
  EXPECT_THROW(w.add_tensor("a", TensorType::F32, {}), Error);
  EXPECT_THROW(w.add_tensor("a", TensorType::F32, {1, 1, 1, 1, 1}), Error);
  EXPECT_THROW(w.add_tensor("a", TensorType::F32, {4, 0}), Error);
  EXPECT_THROW(w.add_tensor("a", TensorType::F32, {-4}), Error);
  EXPECT_THROW(w.add_tensor("a", TensorType::Q4_0, {48}), Error);
  EXPECT_THROW(w.add_tensor("a", TensorType::F32, {int64_t(1) << 40, int64_t(1) << 40}), Error);
  EXPECT_THROW(w.add_tensor("a", TensorType::F32, {4}, std::vector<uint8_t>(15)), Error);
  w.add_tensor("a", TensorType::F32, {4});
  EXPECT_THROW(w.add_tensor("a", TensorType::F32, {4}), Error);
  EXPECT_THROW(w.set_alignment(0), Error);
  EXPECT_THROW(w.set_alignment(24), Error);
}

TEST(GgufRoundTrip, AlignmentBackToDefaultKeepsTheKeyInStep) {
  GgufWriter w;
  w.set_alignment(64);
  w.set_alignment(32);
  w.add_tensor("t", TensorType::F32, {3}, std::vector<uint8_t>(12, 1));
  w.add_tensor("u", TensorType::F32, {3}, std::vector<uint8_t>(12, 2));
  auto f = GgufFile::from_bytes(w.to_bytes());
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_int("general.alignment").value(), 32);
  EXPECT_EQ(f.find_tensor("u")->offset, 32u);
}

TEST(GgufRoundTrip, ArrayElementOfTheWrongTypeIsRefused) {
  GgufWriter w;
  w.set("bad", Value::of_array(ValueType::INT32, {Value::of_u32(1)}));
  EXPECT_THROW(w.to_bytes(), Error);
}

}  // namespace
}  // namespace lockstep::gguf_test
