#include "gguf/gguf_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <system_error>
#include <thread>

#include "gguf/gguf_reader.h"
#include "util/error.h"

namespace lockstep::gguf {

namespace {

uint64_t pad_to(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

// Appends little-endian encodings to a byte vector (the header is small; the data is not here).
struct Encoder {
  std::vector<uint8_t> out;
  template <typename T>
  void put(T v) {
    const size_t at = out.size();
    out.resize(at + sizeof(T));
    std::memcpy(out.data() + at, &v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    const size_t at = out.size();
    out.resize(at + s.size());
    if (!s.empty()) std::memcpy(out.data() + at, s.data(), s.size());
  }
  void put_value(const Value& v) {
    switch (v.type) {
      case ValueType::UINT8:
        put<uint8_t>(uint8_t(v.u));
        break;
      case ValueType::INT8:
        put<int8_t>(int8_t(v.i));
        break;
      case ValueType::UINT16:
        put<uint16_t>(uint16_t(v.u));
        break;
      case ValueType::INT16:
        put<int16_t>(int16_t(v.i));
        break;
      case ValueType::UINT32:
        put<uint32_t>(uint32_t(v.u));
        break;
      case ValueType::INT32:
        put<int32_t>(int32_t(v.i));
        break;
      case ValueType::UINT64:
        put<uint64_t>(v.u);
        break;
      case ValueType::INT64:
        put<int64_t>(v.i);
        break;
      case ValueType::FLOAT32:
        put<float>(float(v.f));
        break;
      case ValueType::FLOAT64:
        put<double>(v.f);
        break;
      case ValueType::BOOL:
        put<uint8_t>(v.u ? 1 : 0);
        break;
      case ValueType::STRING:
        put_string(v.s);
        break;
      case ValueType::ARRAY:
        put<uint32_t>(uint32_t(v.elem_type));
        put<uint64_t>(v.array.size());
        for (const auto& e : v.array) {
          if (e.type != v.elem_type) throw Error("gguf writer: array element of the wrong type");
          put_value(e);
        }
        break;
    }
  }
};

}  // namespace

void GgufWriter::set(const std::string& key, Value value) {
  for (auto& kv : kv_)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::set_alignment(uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw Error("gguf writer: alignment must be a power of two");
  alignment_ = alignment;
  // Keep an earlier general.alignment in step even when going back to the default.
  bool present = false;
  for (const auto& kv : kv_) present |= kv.first == "general.alignment";
  if (alignment != kDefaultAlignment || present) set("general.alignment", Value::of_u32(alignment));
}

// Checks a declaration and sizes it; nothing is added when it throws.
static auto checked_tensor(const std::string& name, TensorType type, std::vector<int64_t> ne,
                           const auto& existing) {
  const std::string what = "gguf writer: tensor '" + name + "'";
  if (ne.empty() || ne.size() > size_t(kMaxDims))
    throw Error(what + " has " + std::to_string(ne.size()) + " dimensions (1..4 allowed)");
  uint64_t n = 1;
  for (int64_t d : ne)
    if (d <= 0 || __builtin_mul_overflow(n, uint64_t(d), &n) || n > uint64_t(INT64_MAX))
      throw Error(what + " has a dimension <= 0 or too many elements");
  auto rb = row_bytes(type, ne[0]);
  if (!rb) throw Error(what + " row length does not fit its type");
  for (const auto& t : existing)
    if (t.name == name) throw Error("gguf writer: duplicate tensor '" + name + "'");
  const int64_t rows = int64_t(n / uint64_t(ne[0]));
  uint64_t n_bytes;
  if (__builtin_mul_overflow(*rb, uint64_t(rows), &n_bytes))
    throw Error(what + " byte size overflows 64 bits");
  using Pending = typename std::decay_t<decltype(existing)>::value_type;
  return Pending{name, type, std::move(ne), n_bytes, rows, *rb, {}};
}

size_t GgufWriter::add_tensor(const std::string& name, TensorType type, std::vector<int64_t> ne) {
  tensors_.push_back(checked_tensor(name, type, std::move(ne), tensors_));
  return tensors_.size() - 1;
}

size_t GgufWriter::add_tensor(const std::string& name, TensorType type, std::vector<int64_t> ne,
                              std::vector<uint8_t> bytes) {
  auto t = checked_tensor(name, type, std::move(ne), tensors_);
  if (bytes.size() != t.n_bytes)
    throw Error("gguf writer: tensor '" + name + "' has " + std::to_string(bytes.size()) +
                " bytes, its shape needs " + std::to_string(t.n_bytes));
  t.bytes = std::move(bytes);
  tensors_.push_back(std::move(t));
  return tensors_.size() - 1;
}

// Builds the header and returns it padded to the alignment, plus each tensor's data offset.
static std::vector<uint8_t> build_header(const std::vector<std::pair<std::string, Value>>& kv,
                                         const auto& tensors, uint32_t alignment,
                                         std::vector<uint64_t>& offsets, uint64_t& data_size) {
  Encoder e;
  e.put<uint32_t>(kMagic);
  e.put<uint32_t>(3);
  e.put<uint64_t>(tensors.size());
  e.put<uint64_t>(kv.size());
  for (const auto& [key, value] : kv) {
    e.put_string(key);
    e.put<uint32_t>(uint32_t(value.type));
    e.put_value(value);
  }
  uint64_t off = 0;
  offsets.clear();
  for (const auto& t : tensors) {
    e.put_string(t.name);
    e.put<uint32_t>(uint32_t(t.ne.size()));
    for (int64_t d : t.ne) e.put<uint64_t>(uint64_t(d));
    e.put<uint32_t>(uint32_t(t.type));
    e.put<uint64_t>(off);
    offsets.push_back(off);
    off += pad_to(t.n_bytes, alignment);
  }
  data_size = off;
  e.out.resize(pad_to(e.out.size(), alignment), 0);
  return std::move(e.out);
}

std::vector<uint8_t> GgufWriter::to_bytes(const FillFn& fill) const {
  std::vector<uint64_t> offsets;
  uint64_t data_size = 0;
  std::vector<uint8_t> out = build_header(kv_, tensors_, alignment_, offsets, data_size);
  const size_t header = out.size();
  out.resize(header + data_size, 0);
  for (size_t k = 0; k < tensors_.size(); ++k) {
    uint8_t* dst = out.data() + header + offsets[k];
    if (!tensors_[k].bytes.empty())
      std::memcpy(dst, tensors_[k].bytes.data(), tensors_[k].n_bytes);
    else if (fill)
      fill(k, dst, tensors_[k].n_bytes);
    else
      throw Error("gguf writer: tensor '" + tensors_[k].name + "' has no data");
  }
  return out;
}

uint64_t GgufWriter::file_size() const {
  std::vector<uint64_t> offsets;
  uint64_t data_size = 0;
  return build_header(kv_, tensors_, alignment_, offsets, data_size).size() + data_size;
}

std::vector<uint8_t> GgufWriter::header() const {
  std::vector<uint64_t> offsets;
  uint64_t data_size = 0;
  return build_header(kv_, tensors_, alignment_, offsets, data_size);
}

void GgufWriter::write(const std::string& path, const FillFn& fill, int threads) const {
  // One work item per tensor: the whole tensor goes to fill().
  std::vector<WorkItem> items;
  for (size_t k = 0; k < tensors_.size(); ++k) items.push_back({k, 0, tensors_[k].rows});
  FillRowsFn whole;
  if (fill)
    whole = [&](size_t k, int64_t, int64_t, uint8_t* dst) { fill(k, dst, tensors_[k].n_bytes); };
  write_items(path, items, whole, threads);
}

void GgufWriter::write_rows(const std::string& path, const FillRowsFn& fill_rows, int threads,
                            uint64_t chunk_bytes) const {
  std::vector<WorkItem> items;
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const Pending& t = tensors_[k];
    const int64_t step =
        std::max<int64_t>(1, int64_t(chunk_bytes / std::max<uint64_t>(1, t.row_bytes)));
    for (int64_t r = 0; r < t.rows; r += step) items.push_back({k, r, std::min(t.rows, r + step)});
  }
  // Largest items first so that the last ones to finish are small.
  std::stable_sort(items.begin(), items.end(), [&](const WorkItem& a, const WorkItem& b) {
    return uint64_t(a.row_end - a.row_begin) * tensors_[a.tensor].row_bytes >
           uint64_t(b.row_end - b.row_begin) * tensors_[b.tensor].row_bytes;
  });
  write_items(path, items, fill_rows, threads);
}

void GgufWriter::write_items(const std::string& path, const std::vector<WorkItem>& items,
                             const FillRowsFn& fill_rows, int threads) const {
  std::vector<uint64_t> offsets;
  uint64_t data_size = 0;
  std::vector<uint8_t> header = build_header(kv_, tensors_, alignment_, offsets, data_size);
  const uint64_t total = header.size() + data_size;
  // A fresh name beside the target, created exclusively and never through a symlink: whatever a
  // stale or planted PATH.tmp points at is left alone.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError(tmp + ": cannot create: " + std::strerror(errno));
  // Reserve the blocks now: a full disk is then reported here, not as SIGBUS while filling.
  if (int e = posix_fallocate(fd, 0, off_t(total)); e != 0) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw Error(tmp + ": cannot allocate " + std::to_string(total) + " bytes: " + std::strerror(e));
  }
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::close(fd);
    std::remove(tmp.c_str());
    throw Error(tmp + ": cannot map for writing: " + std::strerror(e));
  }
  uint8_t* base = static_cast<uint8_t*>(p);
  std::memcpy(base, header.data(), header.size());
  uint8_t* data = base + header.size();

  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::atomic<bool> failed{false};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < items.size() && !failed;) {
      const WorkItem& w = items[i];
      const Pending& t = tensors_[w.tensor];
      uint8_t* dst = data + offsets[w.tensor] + uint64_t(w.row_begin) * t.row_bytes;
      try {
        if (!t.bytes.empty())
          std::memcpy(dst, t.bytes.data() + uint64_t(w.row_begin) * t.row_bytes,
                      uint64_t(w.row_end - w.row_begin) * t.row_bytes);
        else if (fill_rows)
          fill_rows(w.tensor, w.row_begin, w.row_end, dst);
        else
          throw Error("gguf writer: tensor '" + t.name + "' has no data");
      } catch (...) {
        if (!failed.exchange(true)) failure = std::current_exception();
      }
    }
  };
  // A thread that cannot be started (a process or memory limit) leaves its share to the others;
  // the ones already running are joined either way.
  std::vector<std::thread> pool;
  try {
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  } catch (const std::system_error&) {
  }
  worker();
  for (auto& t : pool) t.join();
  munmap(p, total);
  const bool closed = ::close(fd) == 0;
  const int close_errno = errno;
  if (failure || !closed) {
    std::remove(tmp.c_str());
    if (failure) std::rethrow_exception(failure);
    throw Error(tmp + ": cannot write: " + std::strerror(close_errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename from " + tmp + ": " + std::strerror(e));
  }
}

}  // namespace lockstep::gguf
