#include "backend/cpu/kv_cache.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <new>

#include "quant/fp16.h"
#include "util/error.h"

namespace lockstep::cpu {

namespace {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  return buf;
}

}  // namespace

KvCache::KvCache(KvType type, int64_t n_layer, int64_t n_ctx, int64_t kv_dim,
                 const std::string& owner)
    : type_(type), n_ctx_(n_ctx), kv_dim_(kv_dim) {
  const double elements = double(n_layer) * double(n_ctx) * double(kv_dim);
  const double total_bytes = 2 * elements * double(kv_type_bytes(type));
  try {
    if (elements * double(kv_type_bytes(type)) > double(std::numeric_limits<size_t>::max() / 2))
      throw std::bad_alloc();
    const size_t bytes = size_t(n_layer) * size_t(n_ctx) * size_t(kv_dim) * kv_type_bytes(type);
    k_ = std::make_unique_for_overwrite<std::byte[]>(bytes);
    v_ = std::make_unique_for_overwrite<std::byte[]>(bytes);
  } catch (const std::bad_alloc&) {
    throw Error(owner + ": cannot allocate the KV cache (" + gib(total_bytes) + " for n_ctx " +
                std::to_string(n_ctx) + ", " + kv_type_name(type) + "); use a smaller context");
  }
}

void KvCache::store(int64_t layer, int64_t pos, const float* k, const float* v, int64_t n) {
  const int64_t count = n * kv_dim_;
  if (type_ == KvType::F32) {
    std::memcpy(k_f32(layer, pos), k, size_t(count) * sizeof(float));
    std::memcpy(v_f32(layer, pos), v, size_t(count) * sizeof(float));
    return;
  }
  uint16_t* kh = k_f16(layer, pos);
  uint16_t* vh = v_f16(layer, pos);
  for (int64_t i = 0; i < count; ++i) {
    kh[i] = fp32_to_fp16(k[i]);
    vh[i] = fp32_to_fp16(v[i]);
  }
}

float KvCache::load(const std::byte* base, int64_t layer, int64_t pos, int64_t i) const {
  const int64_t index = (layer * n_ctx_ + pos) * kv_dim_ + i;
  if (type_ == KvType::F32) return reinterpret_cast<const float*>(base)[index];
  return fp16_to_fp32(reinterpret_cast<const uint16_t*>(base)[index]);
}

void KvCache::put(std::byte* base, int64_t layer, int64_t pos, int64_t i, float value) const {
  const int64_t index = (layer * n_ctx_ + pos) * kv_dim_ + i;
  if (type_ == KvType::F32) {
    reinterpret_cast<float*>(base)[index] = value;
  } else {
    reinterpret_cast<uint16_t*>(base)[index] = fp32_to_fp16(value);
  }
}

}  // namespace lockstep::cpu
