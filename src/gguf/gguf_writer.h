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
  // Replaces an existing key, keeps its place. Raw: `general.alignment` set here is written as
  // given (tests build malformed files this way); use set_alignment to change the layout.
  void set(const std::string& key, Value value);
  // Power of two; also writes general.alignment when != 32 (or when the key is already there).
  void set_alignment(uint32_t alignment);
  uint32_t alignment() const { return alignment_; }

  // Declares a tensor; its bytes are produced at write time. Returns its index. Throws Error for a
  // shape ggml cannot hold (1..4 dims, each >= 1, row length a multiple of the block size).
  size_t add_tensor(const std::string& name, TensorType type, std::vector<int64_t> ne);
  // Declares a tensor with its bytes given now (small tensors, tests).
  size_t add_tensor(const std::string& name, TensorType type, std::vector<int64_t> ne,
                    std::vector<uint8_t> bytes);

  // fill(index, dst, n_bytes) writes tensor `index`'s data; it may be called from several threads
  // at once for different tensors when threads > 1.
  using FillFn = std::function<void(size_t index, uint8_t* dst, uint64_t n_bytes)>;
  void write(const std::string& path, const FillFn& fill = nullptr, int threads = 1) const;

  // fill_rows(index, row_begin, row_end, dst) writes rows [row_begin, row_end) of tensor `index`
  // (a row is ne[0] elements; rows = ne[1] * ne[2] * ne[3]) to dst. Tensors larger than
  // chunk_bytes are split into row ranges so several threads share one big tensor; the ranges of a
  // tensor are disjoint and cover it. Tensors given with bytes are copied, not passed to fill_rows.
  using FillRowsFn =
      std::function<void(size_t index, int64_t row_begin, int64_t row_end, uint8_t* dst)>;
  void write_rows(const std::string& path, const FillRowsFn& fill_rows, int threads = 1,
                  uint64_t chunk_bytes = uint64_t(4) << 20) const;

  size_t tensor_count() const { return tensors_.size(); }
  uint64_t file_size() const;  // bytes write() will produce
  // Everything before the data section (header, metadata, tensor infos, padding): with the file
  // extended to file_size() (e.g. a sparse file) it describes a model without writing its data.
  std::vector<uint8_t> header() const;

  // The whole file in memory (tests, small files).
  std::vector<uint8_t> to_bytes(const FillFn& fill = nullptr) const;

 private:
  struct WorkItem {
    size_t tensor;
    int64_t row_begin, row_end;
  };
  void write_items(const std::string& path, const std::vector<WorkItem>& items,
                   const FillRowsFn& fill_rows, int threads) const;

  struct Pending {
    std::string name;
    TensorType type;
    std::vector<int64_t> ne;
    uint64_t n_bytes;
    int64_t rows;
    uint64_t row_bytes;
    std::vector<uint8_t> bytes;  // empty when produced by the fill callback
  };
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Pending> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace lockstep::gguf
