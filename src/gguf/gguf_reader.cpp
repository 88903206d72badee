#include "gguf/gguf_reader.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "util/error.h"

namespace lockstep::gguf {

std::string printable_name(const std::string& name) { return printable(name, 96); }

namespace {

// Arrays may hold arrays; bound the nesting so a hostile file cannot exhaust the stack.
constexpr int kMaxArrayDepth = 8;
// Every decoded metadata value (array elements included) becomes a Value of about 100 bytes, so a
// file of N bytes of u8 arrays would cost ~100 N bytes of memory. The decoded metadata (one
// sizeof(Value) per value plus the bytes of every key and string) is therefore held to a budget
// of kMetadataBase + kMetadataPerFileByte * file size, at most kMetadataCap. Real files stay far
// below it: a vocab-only tokenizer file decodes to 7-14 times its size (llama-spm, qwen2,
// llama-bpe), and the metadata of a model file is a small part of the file.
constexpr uint64_t kMetadataBase = uint64_t(64) << 20;
constexpr uint64_t kMetadataPerFileByte = 16;
constexpr uint64_t kMetadataCap = uint64_t(512) << 20;

uint64_t metadata_budget(uint64_t file_size) {
  if (file_size >= (kMetadataCap - kMetadataBase) / kMetadataPerFileByte) return kMetadataCap;
  return kMetadataBase + kMetadataPerFileByte * file_size;
}

// A bounds-checked little-endian cursor over the file image. Every read checks the remaining
// length first; every failure names the byte offset where it happened.
class Cursor {
 public:
  Cursor(const std::string& file, const uint8_t* base, uint64_t size)
      : file_(file), base_(base), size_(size), budget_(metadata_budget(size)) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  // Messages raised while a key or tensor is being read start with its name.
  void set_context(std::string context) { context_ = std::move(context); }

  [[noreturn]] void fail(uint64_t at, const std::string& what) const {
    throw FormatError(file_, at, context_.empty() ? what : context_ + ": " + what);
  }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(pos_, std::string("truncated file: ") + what + " needs " + std::to_string(n) +
                     " bytes, " + std::to_string(remaining()) + " left");
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // Counts `bytes` of decoded metadata against the budget (see kMetadataBase) before they are
  // allocated.
  void charge(uint64_t at, uint64_t bytes) {
    if (bytes > budget_ - decoded_)
      fail(at, "metadata would take more than " + std::to_string(budget_ >> 20) +
                   " MiB of memory once decoded (the limit for a file of " + std::to_string(size_) +
                   " bytes: " + std::to_string(kMetadataBase >> 20) + " MiB + " +
                   std::to_string(kMetadataPerFileByte) + " bytes per file byte, at most " +
                   std::to_string(kMetadataCap >> 20) + " MiB)");
    decoded_ += bytes;
  }

  std::string read_string(const char* what) {
    uint64_t at = pos_;
    uint64_t len = read<uint64_t>(what);
    if (len > remaining())
      fail(at, std::string(what) + ": string length " + std::to_string(len) + " exceeds the " +
                   std::to_string(remaining()) + " bytes left in the file");
    charge(at, len);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const std::string& file_;
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string context_;
  uint64_t budget_;
  uint64_t decoded_ = 0;  // bytes of decoded metadata so far
};

// Smallest number of bytes one value of this type occupies in the file.
uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL:
      return 1;
    case ValueType::UINT16:
    case ValueType::INT16:
      return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32:
      return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING:
      return 8;  // the length prefix
    case ValueType::ARRAY:
      return 12;  // element type + count
  }
  return 1;
}

Value read_value(Cursor& c, ValueType type, int depth) {
  Value v;
  v.type = type;
  switch (type) {
    case ValueType::UINT8:
      v.u = c.read<uint8_t>("u8 value");
      break;
    case ValueType::INT8:
      v.i = c.read<int8_t>("i8 value");
      break;
    case ValueType::UINT16:
      v.u = c.read<uint16_t>("u16 value");
      break;
    case ValueType::INT16:
      v.i = c.read<int16_t>("i16 value");
      break;
    case ValueType::UINT32:
      v.u = c.read<uint32_t>("u32 value");
      break;
    case ValueType::INT32:
      v.i = c.read<int32_t>("i32 value");
      break;
    case ValueType::UINT64:
      v.u = c.read<uint64_t>("u64 value");
      break;
    case ValueType::INT64:
      v.i = c.read<int64_t>("i64 value");
      break;
    case ValueType::FLOAT32:
      v.f = c.read<float>("f32 value");
      break;
    case ValueType::FLOAT64:
      v.f = c.read<double>("f64 value");
      break;
    case ValueType::BOOL: {
      uint64_t at = c.pos();
      uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) c.fail(at, "bool value " + std::to_string(b) + " is not 0 or 1");
      v.u = b;
      break;
    }
    case ValueType::STRING:
      v.s = c.read_string("string value");
      break;
    case ValueType::ARRAY: {
      if (depth >= kMaxArrayDepth)
        c.fail(c.pos(), "arrays nested deeper than " + std::to_string(kMaxArrayDepth) + " levels");
      uint64_t at = c.pos();
      uint32_t raw = c.read<uint32_t>("array element type");
      if (!is_valid_value_type(raw))
        c.fail(at, "unknown array element type " + std::to_string(raw));
      v.elem_type = ValueType(raw);
      uint64_t count_at = c.pos();
      uint64_t count = c.read<uint64_t>("array length");
      // Check the claim against the bytes left before allocating anything for it.
      if (count > c.remaining() / min_value_bytes(v.elem_type))
        c.fail(count_at, "array length " + std::to_string(count) + " cannot fit in the " +
                             std::to_string(c.remaining()) + " bytes left in the file");
      c.charge(count_at, count * sizeof(Value));  // count < file size: no overflow
      v.array.reserve(count);
      for (uint64_t k = 0; k < count; ++k) v.array.push_back(read_value(c, v.elem_type, depth + 1));
      break;
    }
  }
  return v;
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_add_overflow(a, b, out);
}

}  // namespace

int64_t TensorInfo::rows() const {
  int64_t r = 1;
  for (size_t d = 1; d < ne.size(); ++d) r *= ne[d];
  return r;
}

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.path_ = path;
  f.map_ = std::make_unique<MappedFile>(MappedFile::open(path));
  f.parse();
  return f;
}

GgufFile GgufFile::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  GgufFile f;
  f.path_ = name;
  f.map_ = std::make_unique<MappedFile>(MappedFile::from_bytes(std::move(bytes)));
  f.parse();
  return f;
}

void GgufFile::parse() {
  base_ = map_->data();
  size_ = map_->size();
  Cursor c(path_, base_, size_);

  // Header.
  if (size_ < 4) c.fail(0, "truncated file: too short for the GGUF magic");
  uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) c.fail(0, "not a GGUF file (bad magic)");
  uint32_t version = c.read<uint32_t>("version");
  if (version == 1) c.fail(4, "GGUF version 1 is not supported (only versions 2 and 3)");
  if (version != 2 && version != 3) {
    // A big-endian file has the version's bytes swapped: 0x02000000 or 0x03000000.
    if (version == 0x02000000u || version == 0x03000000u)
      c.fail(4, "big-endian GGUF files are not supported");
    c.fail(4, "unsupported GGUF version " + std::to_string(version));
  }
  version_ = version;
  uint64_t n_tensors_at = c.pos();
  uint64_t n_tensors = c.read<uint64_t>("tensor count");
  uint64_t n_kv_at = c.pos();
  uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Each metadata entry needs at least a key length, a type and one value byte; each tensor info
  // at least a name length, n_dims, type and offset. Reject counts the file cannot hold.
  constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
  constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
  if (n_kv > c.remaining() / kMinKvBytes)
    c.fail(n_kv_at, "metadata count " + std::to_string(n_kv) + " cannot fit in the file");
  if (n_tensors > c.remaining() / kMinTensorInfoBytes)
    c.fail(n_tensors_at, "tensor count " + std::to_string(n_tensors) + " cannot fit in the file");

  // Metadata.
  metadata_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    uint64_t at = c.pos();
    c.set_context("metadata entry " + std::to_string(k));
    std::string key = c.read_string("metadata key");
    if (key.empty()) c.fail(at, "empty metadata key");
    c.set_context("key '" + printable_name(key) + "'");
    uint64_t type_at = c.pos();
    uint32_t raw = c.read<uint32_t>("metadata value type");
    if (!is_valid_value_type(raw)) c.fail(type_at, "unknown value type " + std::to_string(raw));
    const uint64_t value_at = c.pos();
    c.charge(value_at, sizeof(MetadataEntry));
    Value v = read_value(c, ValueType(raw), 0);
    c.set_context("");
    if (metadata_index_.count(key))
      c.fail(at, "duplicate metadata key '" + printable_name(key) + "'");
    metadata_index_.emplace(key, metadata_.size());
    metadata_.push_back({std::move(key), std::move(v), at, value_at});
  }

  if (auto it = metadata_index_.find("general.alignment"); it != metadata_index_.end()) {
    const MetadataEntry& e = metadata_[it->second];
    if (e.value.type != ValueType::UINT32)
      c.fail(e.value_offset, std::string("general.alignment is a ") +
                                 value_type_name(e.value.type) + ", must be a u32");
    uint64_t al = e.value.u;
    if (al == 0 || (al & (al - 1)) != 0 || al > (1u << 20))
      c.fail(e.value_offset,
             "general.alignment " + std::to_string(al) + " is not a power of two <= 1 MiB");
    alignment_ = al;
  }

  // Tensor infos.
  tensors_.reserve(n_tensors);
  for (uint64_t t = 0; t < n_tensors; ++t) {
    TensorInfo ti;
    ti.info_offset = c.pos();
    c.set_context("tensor info " + std::to_string(t));
    ti.name = c.read_string("tensor name");
    if (ti.name.empty()) c.fail(ti.info_offset, "empty tensor name");
    c.set_context("tensor '" + printable_name(ti.name) + "'");
    uint64_t dims_at = c.pos();
    uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
    if (n_dims == 0 || n_dims > uint32_t(kMaxDims))
      c.fail(dims_at, "dimension count " + std::to_string(n_dims) + " is not in 1.." +
                          std::to_string(kMaxDims));
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim_at = c.pos();
      uint64_t dim = c.read<uint64_t>("tensor dimension");
      if (dim == 0 || dim > uint64_t(INT64_MAX))
        c.fail(dim_at, "dimension " + std::to_string(d) + " is " +
                           (dim == 0 ? "zero" : "negative (" + std::to_string(int64_t(dim)) + ")"));
      if (mul_overflows(n_elements, dim, &n_elements) || n_elements > uint64_t(INT64_MAX))
        c.fail(dim_at, "element count overflows 64 bits");
      ti.ne.push_back(int64_t(dim));
    }
    ti.n_elements = n_elements;
    uint64_t type_at = c.pos();
    ti.raw_type = c.read<uint32_t>("tensor type");
    auto info = tensor_type_info(ti.raw_type);
    if (!info) c.fail(type_at, "unknown tensor type id " + std::to_string(ti.raw_type));
    ti.type = info->type;
    if (ti.ne[0] % info->block_elems != 0)
      c.fail(dims_at, "row length " + std::to_string(ti.ne[0]) + " is not a multiple of the " +
                          info->name + " block size " + std::to_string(info->block_elems));
    if (mul_overflows(n_elements / info->block_elems, uint64_t(info->block_bytes), &ti.n_bytes))
      c.fail(dims_at, "byte size overflows 64 bits");
    uint64_t off_at = c.pos();
    ti.offset = c.read<uint64_t>("tensor offset");
    if (ti.offset % alignment_ != 0)
      c.fail(off_at, "data offset " + std::to_string(ti.offset) +
                         " is not a multiple of the alignment " + std::to_string(alignment_));
    if (tensor_index_.count(ti.name)) c.fail(ti.info_offset, "duplicate tensor name");
    c.set_context("");
    tensor_index_.emplace(ti.name, tensors_.size());
    tensors_.push_back(std::move(ti));
  }

  // Data section: starts at the next multiple of the alignment.
  uint64_t end_of_infos = c.pos();
  uint64_t padded;
  if (add_overflows(end_of_infos, alignment_ - 1, &padded))
    c.fail(end_of_infos, "data offset overflows");
  data_offset_ = padded / alignment_ * alignment_;
  if (tensors_.empty()) return;  // vocab-only files may end right after the metadata
  if (data_offset_ > size_)
    c.fail(end_of_infos, "truncated file: the data section would start at byte " +
                             std::to_string(data_offset_) + " past the end of the file");
  const uint64_t data_size = size_ - data_offset_;
  for (auto& ti : tensors_) {
    uint64_t end;
    if (add_overflows(ti.offset, ti.n_bytes, &end) || end > data_size)
      throw FormatError(path_, ti.info_offset,
                        "tensor '" + printable_name(ti.name) + "': data [" +
                            std::to_string(data_offset_ + ti.offset) + ", +" +
                            std::to_string(ti.n_bytes) + ") extends past the end of the file (" +
                            std::to_string(size_) + " bytes)");
    ti.data = base_ + data_offset_ + ti.offset;
  }
  // Overlapping tensors: sort by offset and compare neighbours.
  std::vector<const TensorInfo*> order;
  order.reserve(tensors_.size());
  for (const auto& ti : tensors_) order.push_back(&ti);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < order.size(); ++k)
    if (order[k - 1]->offset + order[k - 1]->n_bytes > order[k]->offset)
      throw FormatError(path_, order[k]->info_offset,
                        "tensor '" + printable_name(order[k]->name) + "' overlaps tensor '" +
                            printable_name(order[k - 1]->name) + "'");
}

const Value* GgufFile::find(const std::string& key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].value;
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (auto s = v->as_string()) return s;
  throw InputError(path_ + ": metadata key '" + printable_name(key) + "' is a " +
                   value_type_name(v->type) + ", expected a string");
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (auto i = v->as_int()) return i;
  throw InputError(path_ + ": metadata key '" + printable_name(key) + "' is a " +
                   value_type_name(v->type) + ", expected an integer");
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (auto d = v->as_double()) return d;
  throw InputError(path_ + ": metadata key '" + printable_name(key) + "' is a " +
                   value_type_name(v->type) + ", expected a number");
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (auto b = v->as_bool()) return b;
  throw InputError(path_ + ": metadata key '" + printable_name(key) + "' is a " +
                   value_type_name(v->type) + ", expected a bool");
}

const TensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace lockstep::gguf
