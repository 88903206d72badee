// GGUF v2/v3 reader. The file is memory-mapped; tensor data is never copied. Every count, length,
// offset and size read from the file is checked against the file size with overflow-safe
// arithmetic before it is used, so a hostile file yields a FormatError (file, byte offset, what)
// and never a crash, a hang or an allocation sized by the file's claims.
// Limits: arrays nest at most 8 deep; decoded metadata (one ~100-byte Value per value or array
// element, plus the bytes of keys and strings) may take at most 64 MiB + 16 bytes per byte of the
// file, and never more than 512 MiB; past that the file is refused with a FormatError. Real files
// stay far below (a vocab-only tokenizer file decodes to 7-14 times its size).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "gguf/gguf_value.h"
#include "quant/tensor_type.h"
#include "util/mapped_file.h"

namespace lockstep::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr int kMaxDims = 4;

// A string from the file as it may appear in a one-line message: lockstep::printable (control
// bytes escaped, so a newline cannot break the line), cut after 96 bytes.
std::string printable_name(const std::string& name);

struct TensorInfo {
  std::string name;
  uint32_t raw_type = 0;    // ggml type id as stored
  TensorType type{};        // valid: the reader rejects ids it does not know
  std::vector<int64_t> ne;  // ne[0] is the row length (contiguous), ne[1] the rows, ...
  uint64_t offset = 0;      // relative to the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping
  uint64_t info_offset = 0;       // byte offset of this tensor's info record (for messages)

  int64_t rows() const;  // product of ne[1..]
};

struct MetadataEntry {
  std::string key;
  Value value;
  uint64_t offset = 0;        // byte offset of the entry (its key) in the file
  uint64_t value_offset = 0;  // byte offset of the value (after the key and the type id)
};

class GgufFile {
 public:
  // Opens and validates a file. Throws FormatError / InputError.
  static GgufFile open(const std::string& path);
  // Parses an in-memory image (tests, fuzzer). `name` is used in messages.
  static GgufFile from_bytes(std::vector<uint8_t> bytes, const std::string& name = "<memory>");

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* bytes() const { return base_; }  // the whole file image (file_size() bytes)

  const std::vector<MetadataEntry>& metadata() const { return metadata_; }
  const Value* find(const std::string& key) const;
  // Typed getters. Missing key -> nullopt; present with a wrong type -> InputError naming the key.
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;
  std::optional<bool> get_bool(const std::string& key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(const std::string& name) const;

 private:
  GgufFile() = default;
  void parse();

  std::string path_;
  std::unique_ptr<MappedFile> map_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<MetadataEntry> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace lockstep::gguf
