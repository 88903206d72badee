// Malformed and hostile GGUF images: each must raise a FormatError (exit code 2) whose message
// names the problem and the byte offset, never crash, hang or allocate by the file's claims.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_test_util.h"
#include "util/error.h"

namespace lockstep::gguf_test {
namespace {

using gguf::GgufFile;

// Parses `bytes`, requires a FormatError whose message has the file name, "at byte <offset>"
// (when offset >= 0) and `needle`; returns the message.
std::string expect_format_error(const std::vector<uint8_t>& bytes, const std::string& needle,
                                int64_t offset = -1) {
  try {
    GgufFile::from_bytes(bytes, "bad.gguf");
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.exit_code(), kExitBadInput) << msg;
    EXPECT_EQ(msg.rfind("bad.gguf: at byte ", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nwanted: " << needle;
    if (offset >= 0) {
      EXPECT_NE(msg.find("at byte " + std::to_string(offset) + ":"), std::string::npos) << msg;
    }
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message must be one line: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type for '" << needle << "': " << e.what();
    return {};
  }
  ADD_FAILURE() << "no error for a file that should fail with '" << needle << "'";
  return {};
}

TEST(GgufMalformed, SmallValidImageParses) {
  auto f = GgufFile::from_bytes(small_valid_image().build());
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[1].data + f.tensors()[1].n_bytes, f.tensors()[0].data + 64);
  EXPECT_EQ(f.data_offset() + 64, f.file_size());  // last tensor ends at the end of the file
}

TEST(GgufMalformed, TruncationAtEveryByteBoundary) {
  const std::vector<uint8_t> full = small_valid_image().build();
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE("prefix length " + std::to_string(n));
    std::vector<uint8_t> prefix(full.begin(), full.begin() + std::ptrdiff_t(n));
    try {
      GgufFile::from_bytes(prefix, "cut.gguf");
      ADD_FAILURE() << "a " << n << "-byte prefix of a " << full.size() << "-byte file parsed";
    } catch (const FormatError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("cut.gguf: at byte ", 0), 0u) << msg;
      // Cuts before the data section report truncation or a count/length that no longer fits;
      // cuts inside the data report the tensor that extends past the end.
      const bool named = msg.find("truncated") != std::string::npos ||
                         msg.find("cannot fit") != std::string::npos ||
                         msg.find("exceeds") != std::string::npos ||
                         msg.find("past the end") != std::string::npos;
      EXPECT_TRUE(named) << msg;
    }
  }
}

TEST(GgufMalformed, BadMagic) {
  RawImage im = small_valid_image();
  im.magic = 0x46554746;  // "FGUF"
  expect_format_error(im.build(), "bad magic", 0);
}

TEST(GgufMalformed, Version1) {
  RawImage im = small_valid_image();
  im.version = 1;
  expect_format_error(im.build(), "version 1", 4);
}

TEST(GgufMalformed, UnknownVersion) {
  RawImage im = small_valid_image();
  im.version = 4;
  expect_format_error(im.build(), "unsupported GGUF version 4", 4);
}

TEST(GgufMalformed, BigEndian) {
  RawImage im = small_valid_image();
  im.version = 0x03000000;  // version 3 stored big-endian
  expect_format_error(im.build(), "big-endian", 4);
}

TEST(GgufMalformed, AbsurdTensorCount) {
  RawImage im = small_valid_image();
  im.n_tensors_override = uint64_t(1) << 60;
  expect_format_error(im.build(), "tensor count", 8);
}

TEST(GgufMalformed, AbsurdMetadataCount) {
  RawImage im = small_valid_image();
  im.n_kv_override = UINT64_MAX - 1;
  expect_format_error(im.build(), "metadata count", 16);
}

TEST(GgufMalformed, AbsurdKeyLength) {
  RawImage im = small_valid_image();
  Bytes b;
  b.u32(0x46554747).u32(3).u64(0).u64(1).u64(uint64_t(1) << 62).raw({'k', 'e', 'y'}).u32(4).u32(1);
  expect_format_error(b.bytes(), "string length", 24);
}

TEST(GgufMalformed, AbsurdStringValueLength) {
  RawImage im = small_valid_image();
  RawKv e{"general.name", 8, {}};
  e.value.u64(UINT64_MAX).raw({'x'});
  im.kv.insert(im.kv.begin(), e);
  // key at 24: 8-byte length + 12 bytes + 4-byte type -> value length at 48
  expect_format_error(im.build(), "key 'general.name': string value: string length", 48);
}

TEST(GgufMalformed, AbsurdArrayLength) {
  RawImage im = small_valid_image();
  RawKv e{"tokenizer.ggml.scores", 9, {}};
  e.value.u32(6).u64(uint64_t(1) << 61).f32(0.5f);
  im.kv.push_back(e);
  expect_format_error(im.build(), "array length");
}

TEST(GgufMalformed, ArrayOfStringsLongerThanTheFile) {
  RawImage im = small_valid_image();
  RawKv e{"tokenizer.ggml.tokens2", 9, {}};
  e.value.u32(8).u64(1000).str("only one");
  im.kv.push_back(e);
  expect_format_error(im.build(), "array length 1000 cannot fit");
}

TEST(GgufMalformed, TooManyArrayElementsInAll) {
  // Each array fits in the file and in the decoded-metadata budget (64 MiB + 16 bytes per file
  // byte, which bounds the reader's memory: an element costs ~100 bytes once parsed), but
  // together they pass it.
  RawImage im = small_valid_image();
  for (int k = 0; k < 2; ++k) {
    RawKv e{"big" + std::to_string(k), 9, {}};
    e.value.u32(0).u64(600000).zeros(600000);
    im.kv.push_back(std::move(e));
  }
  expect_format_error(im.build(), "key 'big1': metadata would take more than 82 MiB of memory");
}

TEST(GgufMalformed, ArrayHeavyFileIsBoundedByItsSize) {
  // A 4 MiB u8 array would decode to ~400 MB of Values: more than the 128 MiB a 4 MiB file may
  // take (it used to parse, and a 16 MiB file of such arrays took 1.7 GB).
  RawImage im = small_valid_image();
  RawKv e{"bytes", 9, {}};
  e.value.u32(0).u64(uint64_t(4) << 20).zeros(uint64_t(4) << 20);
  im.kv.push_back(std::move(e));
  const std::string msg =
      expect_format_error(im.build(), "key 'bytes': metadata would take more than 128 MiB");
  EXPECT_NE(msg.find("at most 512 MiB"), std::string::npos) << msg;
}

TEST(GgufMalformed, ArraysNestedTooDeep) {
  RawImage im = small_valid_image();
  RawKv e{"deep", 9, {}};
  for (int d = 0; d < 9; ++d) e.value.u32(9).u64(1);  // nine nested one-element arrays
  e.value.u32(4).u64(1).u32(7);
  im.kv.push_back(e);
  expect_format_error(im.build(), "nested deeper");
}

TEST(GgufMalformed, ArraysNestedToTheLimitParse) {
  RawImage im = small_valid_image();
  RawKv e{"deep", 9, {}};
  for (int d = 0; d < 7; ++d) e.value.u32(9).u64(1);  // 8 array levels in all
  e.value.u32(4).u64(1).u32(7);
  im.kv.push_back(e);
  auto f = GgufFile::from_bytes(im.build());
  const gguf::Value* v = f.find("deep");
  ASSERT_NE(v, nullptr);
  for (int d = 0; d < 7; ++d) {
    ASSERT_EQ(v->type, gguf::ValueType::ARRAY);
    ASSERT_EQ(v->array.size(), 1u);
    v = &v->array[0];
  }
  EXPECT_EQ(v->as_ints().value(), std::vector<int32_t>{7});
}

TEST(GgufMalformed, UnknownValueType) {
  RawImage im = small_valid_image();
  RawKv e{"weird", 13, {}};
  e.value.u32(0);
  im.kv.push_back(e);
  expect_format_error(im.build(), "key 'weird': unknown value type 13");
}

TEST(GgufMalformed, UnknownArrayElementType) {
  RawImage im = small_valid_image();
  RawKv e{"weird", 9, {}};
  e.value.u32(0xdeadbeef).u64(0);
  im.kv.push_back(e);
  expect_format_error(im.build(), "unknown array element type 3735928559");
}

TEST(GgufMalformed, BoolNotZeroOrOne) {
  RawImage im = small_valid_image();
  RawKv e{"flag", 7, {}};
  e.value.u8(2);
  im.kv.push_back(e);
  expect_format_error(im.build(), "key 'flag': bool value 2");
}

TEST(GgufMalformed, EmptyKeyAndEmptyTensorName) {
  RawImage im = small_valid_image();
  im.kv.push_back(kv_u32("", 1));
  expect_format_error(im.build(), "empty metadata key", int64_t(im.kv_offset(3)));
  RawImage t = small_valid_image();
  t.tensors[1].name = "";
  expect_format_error(t.build(), "empty tensor name", int64_t(t.tensor_info_offset(1)));
}

TEST(GgufMalformed, UnknownTensorType) {
  for (uint32_t type : {4u, 5u, 31u, 1000u}) {  // 4, 5: removed Q4_2/Q4_3
    RawImage im = small_valid_image();
    im.tensors[0].type = type;
    expect_format_error(im.build(), "tensor 'a': unknown tensor type id " + std::to_string(type));
  }
}

TEST(GgufMalformed, DimensionCountZeroAndAboveFour) {
  RawImage im = small_valid_image();
  im.tensors[0].n_dims_override = 0;
  im.tensors[0].dims.clear();
  expect_format_error(im.build(), "tensor 'a': dimension count 0");
  RawImage im5 = small_valid_image();
  im5.tensors[0].dims = {4, 2, 1, 1, 1};
  expect_format_error(im5.build(), "tensor 'a': dimension count 5");
}

TEST(GgufMalformed, ZeroDimension) {
  RawImage im = small_valid_image();
  im.tensors[0].dims = {4, 0};
  expect_format_error(im.build(), "dimension 1 is zero");
}

TEST(GgufMalformed, NegativeLookingDimension) {
  RawImage im = small_valid_image();
  im.tensors[0].dims = {uint64_t(1) << 63, 1};
  expect_format_error(im.build(), "dimension 0 is negative");
  RawImage im2 = small_valid_image();
  im2.tensors[0].dims = {4, UINT64_MAX};
  expect_format_error(im2.build(), "dimension 1 is negative (-1)");
}

TEST(GgufMalformed, ElementCountOverflow) {
  RawImage im = small_valid_image();
  im.tensors[0].dims = {uint64_t(1) << 32, uint64_t(1) << 32};
  expect_format_error(im.build(), "element count overflows");
  RawImage im2 = small_valid_image();  // 2^31 * 2^31 * 4 = 2^64
  im2.tensors[0].dims = {uint64_t(1) << 31, uint64_t(1) << 31, 4};
  expect_format_error(im2.build(), "element count overflows");
}

TEST(GgufMalformed, ByteSizeOverflow) {
  RawImage im = small_valid_image();
  im.tensors[0].dims = {uint64_t(1) << 62};  // 2^62 F32 elements = 2^64 bytes
  expect_format_error(im.build(), "byte size overflows");
}

TEST(GgufMalformed, OffsetPastTheEnd) {
  RawImage im = small_valid_image();
  im.tensors[1].offset = 64;
  expect_format_error(im.build(), "tensor 'b': data", int64_t(im.tensor_info_offset(1)));
  RawImage huge = small_valid_image();
  huge.tensors[1].offset = UINT64_MAX - 31;  // aligned, and offset + size wraps around
  expect_format_error(huge.build(), "extends past the end");
}

TEST(GgufMalformed, MisalignedOffset) {
  RawImage im = small_valid_image();
  im.tensors[1].offset = 36;
  expect_format_error(im.build(),
                      "tensor 'b': data offset 36 is not a multiple of the alignment 32");
}

TEST(GgufMalformed, OverlappingTensors) {
  RawImage im = small_valid_image();
  im.tensors[0].dims = {8, 2};  // 64 bytes from 0 runs into "b" at 32
  im.data.resize(128);
  expect_format_error(im.build(), "overlaps");
  RawImage same = small_valid_image();
  same.tensors[1].offset = 0;
  expect_format_error(same.build(), "overlaps");
}

TEST(GgufMalformed, DuplicateKey) {
  RawImage im = small_valid_image();
  im.kv.push_back(kv_u32("llama.block_count", 2));
  expect_format_error(im.build(), "duplicate metadata key 'llama.block_count'",
                      int64_t(im.kv_offset(3)));
}

TEST(GgufMalformed, DuplicateTensorName) {
  RawImage im = small_valid_image();
  im.tensors[1].name = "a";
  expect_format_error(im.build(), "tensor 'a': duplicate tensor name",
                      int64_t(im.tensor_info_offset(1)));
}

TEST(GgufMalformed, BadAlignment) {
  for (uint32_t al : {0u, 3u, 48u, 1u << 21}) {
    RawImage im = small_valid_image();
    im.kv.push_back(kv_u32("general.alignment", al));
    // the value sits after the key (8 + 17 bytes) and the type (4)
    expect_format_error(im.build(), "general.alignment " + std::to_string(al) + " is not",
                        int64_t(im.kv_offset(3) + 8 + 17 + 4));
  }
  RawImage wrong = small_valid_image();
  RawKv e{"general.alignment", 10, {}};  // u64 instead of u32
  e.value.u64(32);
  wrong.kv.push_back(e);
  expect_format_error(wrong.build(), "general.alignment is a u64, must be a u32");
  RawImage str = small_valid_image();
  str.kv.push_back(kv_string("general.alignment", "32"));
  expect_format_error(str.build(), "general.alignment is a string");
}

TEST(GgufMalformed, RowLengthNotAMultipleOfTheBlockSize) {
  RawImage im = small_valid_image();
  im.tensors[0].dims = {33, 1};
  im.tensors[0].type = 2;  // Q4_0, 32 elements per block
  expect_format_error(im.build(),
                      "tensor 'a': row length 33 is not a multiple of the Q4_0 block size 32");
  RawImage k = small_valid_image();
  k.tensors[0].dims = {128, 1};
  k.tensors[0].type = 12;  // Q4_K, 256 per block
  expect_format_error(k.build(), "row length 128 is not a multiple of the Q4_K block size 256");
}

TEST(GgufMalformed, DataSectionStartsPastTheEnd) {
  RawImage im = small_valid_image();
  std::vector<uint8_t> b = im.build();
  const uint64_t infos_end = im.tensor_info_offset(1) + 8 + 1 + 4 + 8 + 4 + 8;
  ASSERT_NE(infos_end % 32, 0u) << "the test needs padding after the tensor infos";
  b.resize(infos_end);
  expect_format_error(b, "data section would start", int64_t(infos_end));
}

TEST(GgufMalformed, TruncatedValueNamesTheKey) {
  RawImage im = small_valid_image();
  std::vector<uint8_t> b = im.build();
  b.resize(im.kv_offset(1) + 8 + 17 + 4 + 2);  // half of llama.block_count's u32 value
  expect_format_error(b, "key 'llama.block_count': truncated file: u32 value needs 4 bytes");
}

TEST(GgufMalformed, NamesWithControlBytesStayOnOneLine) {
  RawImage im = small_valid_image();
  im.kv.push_back(kv_u32("evil\nkey\x1b[31m", 1));
  im.kv.push_back(kv_u32("evil\nkey\x1b[31m", 2));
  const std::string msg = expect_format_error(im.build(), "duplicate metadata key");
  EXPECT_NE(msg.find("'evil\\nkey\\x1b[31m'"), std::string::npos) << msg;
  RawImage t = small_valid_image();
  t.tensors[0].name = std::string("a\r\n", 3);
  t.tensors[0].type = 999;
  expect_format_error(t.build(), "tensor 'a\\x0d\\n': unknown tensor type");
  RawImage longname = small_valid_image();
  longname.tensors[0].name = std::string(5000, 'n');
  longname.tensors[0].type = 999;
  const std::string m2 = expect_format_error(longname.build(), "...': unknown tensor type");
  EXPECT_LT(m2.size(), 300u);
}

TEST(GgufMalformed, VocabOnlyFileMayEndAfterTheMetadata) {
  RawImage im;
  im.kv.push_back(kv_string("tokenizer.ggml.model", "gpt2"));
  std::vector<uint8_t> b = im.build();
  while (!b.empty() && b.back() == 0 && b.size() > 24 + 8 + 20 + 4 + 8 + 4) b.pop_back();
  auto f = GgufFile::from_bytes(b);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.get_string("tokenizer.ggml.model").value(), "gpt2");
}

TEST(GgufMalformed, TypedGetterOnWrongTypeNamesTheKey) {
  auto f = GgufFile::from_bytes(small_valid_image().build(), "x.gguf");
  try {
    (void)f.get_int("general.architecture");
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'general.architecture' is a string"), std::string::npos)
        << e.what();
  }
}

TEST(GgufMalformed, OpenReportsMissingFileAndDirectory) {
  EXPECT_THROW(GgufFile::open("/nonexistent/dir/model.gguf"), InputError);
  EXPECT_THROW(GgufFile::open("/tmp"), InputError);
  const std::string empty = temp_path("empty.gguf");
  write_file(empty, {});
  expect_format_error({}, "too short");
  EXPECT_THROW(GgufFile::open(empty), FormatError);
  std::remove(empty.c_str());
}

}  // namespace
}  // namespace lockstep::gguf_test
