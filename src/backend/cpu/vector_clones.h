// Function multi-versioning for the reference kernels: GCC compiles a function marked
// LOCKSTEP_VECTOR_CLONES twice (AVX2 and baseline x86-64) and picks one at load time, so a generic
// build still uses 256-bit registers where the CPU has them.
//
// A .cpp using it must also switch off floating-point contraction (see LOCKSTEP_NO_FP_CONTRACT
// below, placed before any function): otherwise the AVX2 clone could fuse a*b+c into one FMA and
// round differently from the baseline clone, and the reference would give different bits on
// different machines.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LOCKSTEP_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LOCKSTEP_VECTOR_CLONES
#endif

#if defined(__clang__)
#define LOCKSTEP_NO_FP_CONTRACT _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define LOCKSTEP_NO_FP_CONTRACT _Pragma("GCC optimize(\"fp-contract=off\")")
#else
#define LOCKSTEP_NO_FP_CONTRACT
#endif
