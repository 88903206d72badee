// Helpers for the GGUF tests: a byte-level image builder that is independent of GgufWriter (so
// the writer is checked against something it did not produce), and a runner for the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::gguf_test {

// Appends little-endian fields; each call returns *this so images read like the format spec.
class Bytes {
 public:
  Bytes& u8(uint8_t v) { return put(&v, 1); }
  Bytes& u16(uint16_t v) { return put(&v, 2); }
  Bytes& u32(uint32_t v) { return put(&v, 4); }
  Bytes& u64(uint64_t v) { return put(&v, 8); }
  Bytes& f32(float v) { return put(&v, 4); }
  Bytes& f64(double v) { return put(&v, 8); }
  Bytes& str(std::string_view s) {  // GGUF string: u64 length + bytes
    u64(s.size());
    return put(s.data(), s.size());
  }
  Bytes& raw(const std::vector<uint8_t>& b) { return put(b.data(), b.size()); }
  Bytes& zeros(uint64_t n) {
    bytes_.resize(bytes_.size() + n, 0);
    return *this;
  }
  Bytes& pad_to(uint64_t alignment) {
    while (bytes_.size() % alignment) bytes_.push_back(0);
    return *this;
  }
  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  Bytes& put(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), c, c + n);
    return *this;
  }
  std::vector<uint8_t> bytes_;
};

// One metadata entry: the key, the raw type id and the already-encoded value.
struct RawKv {
  std::string key;
  uint32_t type;
  Bytes value;
};

// One tensor info record, fields as stored.
struct RawTensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t offset;
  uint32_t n_dims_override = 0xffffffffu;  // when set, written instead of dims.size()
};

// A GGUF image: header, metadata, tensor infos, padding to `alignment`, then `data` as given.
struct RawImage {
  uint32_t magic = 0x46554747;
  uint32_t version = 3;
  std::vector<RawKv> kv;
  std::vector<RawTensor> tensors;
  uint64_t alignment = 32;
  std::vector<uint8_t> data;
  uint64_t n_tensors_override = UINT64_MAX;
  uint64_t n_kv_override = UINT64_MAX;

  std::vector<uint8_t> build() const;
  // Byte offset where metadata entry k / tensor info t starts in build()'s output.
  uint64_t kv_offset(size_t k) const;
  uint64_t tensor_info_offset(size_t t) const;
};

RawKv kv_u32(const std::string& key, uint32_t v);
RawKv kv_string(const std::string& key, const std::string& v);

// A small valid image: 3 metadata entries and 2 F32 tensors (4x2 and 8), whose last tensor ends
// exactly at the end of the file (so every proper prefix is truncated).
RawImage small_valid_image();

// Result of running the lockstep CLI.
struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
CliResult run_cli(const std::string& args);

// A fresh path under the system temp directory (file not created).
std::string temp_path(const std::string& stem);
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace lockstep::gguf_test
