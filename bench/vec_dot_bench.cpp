// Throughput of the vec_dot kernels: a 896 x 4864 matvec (896 rows of 4864 elements, the shape
// of Qwen2.5-0.5B's ffn_down) on one core, per weight type and ISA. Reports bytes_per_second =
// weight bytes streamed per second (the activation, 4864 elements, stays in L1/L2).
// dequantize_* cases: dequantize_row over the same weights; ns_per_elem is printed with an "s"
// suffix (seconds per 1e9 elements). Under "scalar" it is the portable code.
//   build-quant/bench/vec_dot_bench --benchmark_min_time=0.5s
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/fp16.h"
#include "quant/quantize.h"
#include "quant/vec_dot.h"

namespace {

using lockstep::Isa;
using lockstep::TensorType;

constexpr int64_t kRows = 896, kCols = 4864;

// kRows rows of kCols elements of type t (row_bytes(t, kCols) bytes each).
std::vector<uint8_t> make_weights(TensorType t, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t rb = lockstep::row_bytes(t, kCols).value();
  std::vector<uint8_t> w(rb * kRows);
  std::vector<float> row(kCols);
  const auto& info = lockstep::tensor_type_info(t);
  for (int64_t r = 0; r < kRows; ++r) {
    for (auto& v : row) v = 0.05f * nd(rng);
    if (info.can_quantize) {
      lockstep::quantize_row(t, row.data(), &w[size_t(r) * rb], kCols);
    } else {  // Q2_K / Q3_K: random levels, small sane fp16 scales
      for (size_t i = 0; i < rb; ++i) w[size_t(r) * rb + i] = uint8_t(rng());
      for (size_t b = 0; b < rb; b += size_t(info.block_bytes)) {
        const uint16_t h = lockstep::fp32_to_fp16(1e-3f);
        const size_t off = t == TensorType::Q2_K ? 80 : 108;
        std::memcpy(&w[size_t(r) * rb + b + off], &h, 2);
        if (t == TensorType::Q2_K) std::memcpy(&w[size_t(r) * rb + b + off + 2], &h, 2);
      }
    }
  }
  return w;
}

void bm_matvec(benchmark::State& state, TensorType t, Isa isa) {
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t rb = lockstep::row_bytes(t, kCols).value();
  const std::vector<uint8_t> w = make_weights(t, rng);
  std::vector<float> x(kCols);
  for (auto& v : x) v = nd(rng);
  std::vector<uint8_t> act(lockstep::activation_row_bytes(t, kCols));
  std::vector<float> y(kRows);
  lockstep::force_isa(isa);
  for (auto _ : state) {
    lockstep::quantize_activation(t, x.data(), act.data(), kCols);
    lockstep::matvec(t, w.data(), rb, kRows, act.data(), kCols, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(w.size()));
}

void bm_dequantize(benchmark::State& state, TensorType t, Isa isa) {
  constexpr int64_t kChunk = 1024;
  std::mt19937 rng(42);
  const size_t rb = lockstep::row_bytes(t, kCols).value();
  const std::vector<uint8_t> w = make_weights(t, rng);
  const auto& info = lockstep::tensor_type_info(t);
  std::vector<float> out(kChunk);
  lockstep::force_isa(isa);
  for (auto _ : state) {
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c0 = 0; c0 < kCols; c0 += kChunk) {
        const int64_t nc = std::min(kChunk, kCols - c0);
        lockstep::dequantize_row(
            t, &w[size_t(r) * rb + size_t(c0 / info.block_elems * info.block_bytes)], out.data(),
            nc);
        benchmark::DoNotOptimize(out.data());
      }
    }
    benchmark::ClobberMemory();
  }
  const double elems = double(kRows) * double(kCols);
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(elems));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(w.size()));
  state.counters["ns_per_elem"] = benchmark::Counter(
      elems * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

const int kRegistered = [] {
  const TensorType types[] = {
      TensorType::Q4_K, TensorType::Q6_K, TensorType::Q8_0, TensorType::Q5_0, TensorType::Q4_0,
      TensorType::Q4_1, TensorType::Q5_1, TensorType::Q2_K, TensorType::Q3_K, TensorType::Q5_K,
      TensorType::F16,  TensorType::BF16, TensorType::F32};
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (!lockstep::isa_supported(isa)) continue;
    for (TensorType t : types) {
      const std::string name = std::string("matvec_896x4864/") +
                               lockstep::tensor_type_info(t).name + "/" + lockstep::isa_name(isa);
      benchmark::RegisterBenchmark(name.c_str(), bm_matvec, t, isa)->Unit(benchmark::kMicrosecond);
    }
  }
  // dequantize_row over the same weights, in the reference matmul's pieces of at most 1024
  // columns (kMatmulColumnChunk) into an L1-resident buffer. Scalar = the portable code.
  const TensorType deq_types[] = {TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K,
                                  TensorType::Q8_0, TensorType::Q4_0, TensorType::Q5_0,
                                  TensorType::F16,  TensorType::BF16};
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (!lockstep::isa_supported(isa)) continue;
    for (TensorType t : deq_types) {
      const std::string name = std::string("dequantize_896x4864/") +
                               lockstep::tensor_type_info(t).name + "/" + lockstep::isa_name(isa);
      benchmark::RegisterBenchmark(name.c_str(), bm_dequantize, t, isa)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
