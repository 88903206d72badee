// Which instruction set the reference kernels run with. The kernels are written once, in plain
// C++ with GCC/Clang vector types (lane_tiles.h), and compiled three times: for AVX-512, for
// AVX2+FMA and for the baseline; the best level the CPU supports is picked at run time, so a
// generic build still uses wide registers.
//
// On one machine every kernel uses the same level. The AVX levels fuse multiply-adds (FMA, where
// the compiler contracts them) and the baseline does not, so results may differ in the last bits
// between machines of different levels (FMA rounds once where the baseline rounds twice).
#pragma once

namespace lockstep::cpu_ref {

enum class SimdLevel { Baseline, Avx2, Avx512 };

const char* simd_level_name(SimdLevel level);
bool simd_level_supported(SimdLevel level);
// The level the kernels use now: the best supported one unless a test forced another.
SimdLevel active_simd_level();
// Process-wide, for tests and benchmarks. Throws Error when the CPU lacks the level.
void force_simd_level(SimdLevel level);

}  // namespace lockstep::cpu_ref

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOCKSTEP_X86_KERNELS 1
#if defined(__clang__)
// clang ignores a whole target attribute that names prefer-vector-width (it would then compile
// these functions for the baseline ISA); its 16-lane vectors use 512-bit registers anyway.
#define LOCKSTEP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#else
#define LOCKSTEP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#endif
#define LOCKSTEP_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define LOCKSTEP_X86_KERNELS 0
#endif
