// A read-only memory mapping of a whole file (or an owned byte buffer with the same interface).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lockstep {

class MappedFile {
 public:
  static MappedFile open(const std::string& path);  // throws InputError
  static MappedFile from_bytes(std::vector<uint8_t> bytes);
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> owned_;
};

}  // namespace lockstep
