// The KV cache of the CPU backends: K and V of every layer and position, stored as float32 (the
// reference) or IEEE half (the fast path's default: half the memory traffic in attention, and
// the precision llama.cpp's default cache has). Layout [layer][position][kv_dim], K and V apart,
// so the rows of consecutive positions of one layer are consecutive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/kv_type.h"

namespace lockstep::cpu {

using lockstep::kv_type_name;
using lockstep::KvType;

class KvCache {
 public:
  KvCache() = default;
  // The memory is reserved but left untouched: pages are only used as positions are written.
  // Throws Error naming `owner` (the backend) and the size when it cannot be allocated.
  KvCache(KvType type, int64_t n_layer, int64_t n_ctx, int64_t kv_dim, const std::string& owner);

  KvType type() const { return type_; }
  int64_t kv_dim() const { return kv_dim_; }

  // Position pos of layer `layer`; the next position follows after kv_dim elements. Only the
  // accessors of the cache's own type may be used.
  float* k_f32(int64_t layer, int64_t pos) const { return at<float>(k_.get(), layer, pos); }
  float* v_f32(int64_t layer, int64_t pos) const { return at<float>(v_.get(), layer, pos); }
  uint16_t* k_f16(int64_t layer, int64_t pos) const { return at<uint16_t>(k_.get(), layer, pos); }
  uint16_t* v_f16(int64_t layer, int64_t pos) const { return at<uint16_t>(v_.get(), layer, pos); }

  // Writes n positions pos .. pos+n-1 of `layer` from float rows of kv_dim values (converted to
  // the cache's type, round to nearest even).
  void store(int64_t layer, int64_t pos, const float* k, const float* v, int64_t n);

  // TEST KNOB helper: adds k_delta(i) / v_delta(i) to element i of position pos of `layer` (in
  // float; an F16 entry is rounded back to half).
  template <class KDelta, class VDelta>
  void add(int64_t layer, int64_t pos, KDelta k_delta, VDelta v_delta);

 private:
  template <class T>
  T* at(std::byte* base, int64_t layer, int64_t pos) const {
    return reinterpret_cast<T*>(base) + (layer * n_ctx_ + pos) * kv_dim_;
  }
  float load(const std::byte* base, int64_t layer, int64_t pos, int64_t i) const;
  void put(std::byte* base, int64_t layer, int64_t pos, int64_t i, float value) const;

  KvType type_ = KvType::F32;
  int64_t n_ctx_ = 0, kv_dim_ = 0;
  std::unique_ptr<std::byte[]> k_, v_;
};

template <class KDelta, class VDelta>
void KvCache::add(int64_t layer, int64_t pos, KDelta k_delta, VDelta v_delta) {
  for (int64_t i = 0; i < kv_dim_; ++i) {
    put(k_.get(), layer, pos, i, load(k_.get(), layer, pos, i) + k_delta(i));
    put(v_.get(), layer, pos, i, load(v_.get(), layer, pos, i) + v_delta(i));
  }
}

}  // namespace lockstep::cpu
