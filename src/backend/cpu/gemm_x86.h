// The x86 prelude of the fast path's register-tiled GEMMs (gemm_q8_0.cpp, gemm_k.cpp): the
// intrinsics and the target attributes their kernels carry. LS_GEMM_X86 is 0 on other compilers
// and architectures, where only the portable kernels are built. Include in .cpp files only (the
// pragmas and macros are file-wide).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_*() idiom.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define LS_GEMM_X86 1
#define LS_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define LS_AVX2 __attribute__((target("avx2,fma,f16c")))
#define LS_INLINE inline __attribute__((always_inline))
#include <cstddef>
namespace lockstep::cpu_fast {
// Decode reads each weight once, as one sequential stream; its kernels ask for the bytes this far
// ahead. The hardware prefetchers alone left a 2-core Xeon VM at a third of its read bandwidth
// (0.5B tg32 at -t 1: 10 tok/s without, 16 at 512 bytes, 21 at 2048, 21 at 4096; bench/NOTES.md).
constexpr size_t kPrefetchBytes = 2048;
}  // namespace lockstep::cpu_fast
#else
#define LS_GEMM_X86 0
#endif
