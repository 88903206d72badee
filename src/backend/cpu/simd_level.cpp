#include "backend/cpu/simd_level.h"

#include <atomic>
#include <string>

#include "util/error.h"

namespace lockstep::cpu_ref {

namespace {

SimdLevel best_level() {
#if LOCKSTEP_X86_KERNELS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("fma"))
    return SimdLevel::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::Avx2;
#endif
  return SimdLevel::Baseline;
}

std::atomic<int>& forced() {
  static std::atomic<int> level{-1};
  return level;
}

}  // namespace

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::Avx512:
      return "avx512";
    case SimdLevel::Avx2:
      return "avx2";
    case SimdLevel::Baseline:
      break;
  }
  return "baseline";
}

bool simd_level_supported(SimdLevel level) {
  static const SimdLevel best = best_level();
  return int(level) <= int(best);
}

SimdLevel active_simd_level() {
  static const SimdLevel best = best_level();
  const int f = forced().load(std::memory_order_relaxed);
  return f < 0 ? best : SimdLevel(f);
}

void force_simd_level(SimdLevel level) {
  if (!simd_level_supported(level))
    throw Error(std::string("cpu-ref: this CPU does not support ") + simd_level_name(level));
  forced().store(int(level), std::memory_order_relaxed);
}

}  // namespace lockstep::cpu_ref
