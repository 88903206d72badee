// GGUF v3 writer with llama.cpp's conventions: metadata in insertion order, tensor infos, then the
// data section aligned to general.alignment (default 32), each tensor's data padded to the
// alignment. Tensor data is produced by a callback straight into the mapped output file, so a
// multi-GB model is never held in memory twice.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gguf/gguf_value.h"
#include "quant/tensor_type.h"

namespace lockstep::gguf {

class GgufWriter {
 public:
  void set(const std::string& key, Value value);  // replaces an existing key, keeps its place
  void set_alignment(uint32_t alignment);         // also writes general.alignment when != 32

  // Declares a tensor; its bytes are produced at write time. Returns its index.
  size_t add_tensor(const std::string& name, TensorType type, std::vector<int64_t> ne);
  // Declares a tensor with its bytes given now (small tensors, tests).
  size_t add_tensor(const std::string& name, TensorType type, std::vector<int64_t> ne,
                    std::vector<uint8_t> bytes);

  // fill(index, dst, n_bytes) writes tensor `index`'s data; it may be called from several threads
  // at once for different tensors when threads > 1.
  using FillFn = std::function<void(size_t index, uint8_t* dst, uint64_t n_bytes)>;
  void write(const std::string& path, const FillFn& fill = nullptr, int threads = 1) const;

  // The whole file in memory (tests, small files).
  std::vector<uint8_t> to_bytes(const FillFn& fill = nullptr) const;

 private:
  struct Pending {
    std::string name;
    TensorType type;
    std::vector<int64_t> ne;
    uint64_t n_bytes;
    std::vector<uint8_t> bytes;  // empty when produced by the fill callback
  };
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Pending> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace lockstep::gguf
