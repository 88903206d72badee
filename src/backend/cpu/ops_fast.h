// The fast CPU path's stages that are not matrix products (the counterpart of ops_ref.h):
// attention over an F16 KV cache and SwiGLU. The instruction set follows vec_dot.h's active_isa()
// (AVX-512, AVX2+FMA+F16C, or portable scalar code), so one switch selects every fast kernel.
//
// Numerics: float32 arithmetic throughout; exp is a polynomial (Cephes-style range reduction,
// relative error about 2e-7, i.e. a few ulp) instead of libm; the softmax sum is a float SIMD sum.
// Cached keys and values are IEEE half, converted exactly to float before use.
#pragma once

#include <cstdint>

#include "backend/cpu/attention_scoring.h"

namespace lockstep::cpu_fast {

// One attention head for one query: softmax of the scores of q . k_j (attention_scoring.h:
// by default q . k_j / sqrt(head_dim)) over cache positions j in [0, n_kv), then the weighted
// sum of v_j. k and v are halves (IEEE binary16); key j starts at k + j * kv_stride (same for
// v). scores: n_kv floats of scratch.
void attention_head_f16(float* out, const float* q, const uint16_t* k, const uint16_t* v,
                        int64_t n_kv, int64_t head_dim, int64_t kv_stride, float* scores,
                        const cpu::AttentionScoring& scoring = {});

// x[i] = exp(x[i]) for i < n. Inputs above ~88.7 give a large finite value or inf, below ~-87.3
// about 1e-38 instead of a denormal; NaN stays NaN.
void exp_inplace(float* x, int64_t n);

// gate[i] = silu(gate[i]) * up[i] = gate[i] * up[i] / (1 + exp(-gate[i])).
void swiglu(float* gate, const float* up, int64_t n);

// gate[i] = gelu(gate[i]) * up[i], GELU in its tanh approximation (ops_ref.h's gelu_tanh), tanh
// through exp_inplace's polynomial.
void geglu(float* gate, const float* up, int64_t n);

}  // namespace lockstep::cpu_fast
