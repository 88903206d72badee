// Element type of a KV cache, for every backend: float32 (the CPU reference's precision) or IEEE
// half (the fast paths' default: half the memory and the attention bandwidth, the precision
// llama.cpp's default cache has).
#pragma once

#include <cstddef>

namespace lockstep {

enum class KvType { F32, F16 };

inline const char* kv_type_name(KvType type) {
  return type == KvType::F16 ? "f16" : "f32";
}
inline size_t kv_type_bytes(KvType type) {
  return type == KvType::F16 ? 2 : 4;
}

}  // namespace lockstep
