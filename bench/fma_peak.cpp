// The CPU's single-precision FMA peak: the denominator of "fraction of peak" for the reference's
// prefill matmul (issue 13, target 3). Each thread runs 12 independent FMA chains (enough to keep
// 2 FMA ports busy across 4 cycles of latency), 512-bit where the CPU has AVX-512F, else 256-bit
// AVX2+FMA, and the program prints GFLOP/s for 1 thread and for N threads (argument, default all
// hardware threads). A plain program, no Google Benchmark: it must build on the GPU machine.
//   fma_peak [threads]
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

constexpr int kChains = 12;

// Twelve named accumulators, not an array: GCC kept an array of vectors in memory at -O2, and
// the chains then ran at store-forwarding latency.
#define FMA_CHAINS(T, FMA, SET1)                                                              \
  T a0 = SET1(1.00f), a1 = SET1(1.01f), a2 = SET1(1.02f), a3 = SET1(1.03f), a4 = SET1(1.04f), \
    a5 = SET1(1.05f), a6 = SET1(1.06f), a7 = SET1(1.07f), a8 = SET1(1.08f), a9 = SET1(1.09f), \
    a10 = SET1(1.10f), a11 = SET1(1.11f);                                                     \
  const T m = SET1(0.9999999f), c = SET1(1e-7f);                                              \
  for (long i = 0; i < iters; ++i) {                                                          \
    a0 = FMA(a0, m, c), a1 = FMA(a1, m, c), a2 = FMA(a2, m, c), a3 = FMA(a3, m, c);           \
    a4 = FMA(a4, m, c), a5 = FMA(a5, m, c), a6 = FMA(a6, m, c), a7 = FMA(a7, m, c);           \
    a8 = FMA(a8, m, c), a9 = FMA(a9, m, c), a10 = FMA(a10, m, c), a11 = FMA(a11, m, c);       \
  }                                                                                           \
  const T s = (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) + ((a8 + a9) + (a10 + a11))

// The lanes' sum: the result the caller checks, so that no chain is dead code.
float sum(const float* lanes, int n) {
  float r = 0;
  for (int i = 0; i < n; ++i) r += lanes[i];
  return r;
}

__attribute__((target("avx512f"))) float fma_chains_512(long iters) {
  FMA_CHAINS(__m512, _mm512_fmadd_ps, _mm512_set1_ps);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return sum(lanes, 16);
}

__attribute__((target("avx2,fma"))) float fma_chains_256(long iters) {
  FMA_CHAINS(__m256, _mm256_fmadd_ps, _mm256_set1_ps);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return sum(lanes, 8);
}

// GFLOP/s of `threads` threads each running `iters` iterations; the best of 3 runs.
double measure(int threads, bool wide, long iters) {
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    std::vector<float> sink(static_cast<size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back(
          [&, t] { sink[size_t(t)] = wide ? fma_chains_512(iters) : fma_chains_256(iters); });
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    float total = 0;
    for (float v : sink) total += v;
    if (total != total) std::fprintf(stderr, "fma_peak: NaN\n");
    const double flops = double(threads) * double(iters) * kChains * (wide ? 16 : 8) * 2;
    if (flops / s / 1e9 > best) best = flops / s / 1e9;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int all = int(std::thread::hardware_concurrency());
  const int threads = argc > 1 ? std::atoi(argv[1]) : all;
  if (threads < 1) {
    std::fprintf(stderr, "fma_peak: threads must be >= 1\n");
    return 2;
  }
  const bool wide = __builtin_cpu_supports("avx512f");
  if (!wide && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    std::fprintf(stderr, "fma_peak: the CPU has neither AVX-512F nor AVX2+FMA\n");
    return 1;
  }
  const long iters = 20'000'000;
  std::printf("fma_peak (%s): 1 thread %.1f GFLOP/s, %d threads %.1f GFLOP/s\n",
              wide ? "avx512f" : "avx2+fma", measure(1, wide, iters), threads,
              measure(threads, wide, iters));
  return 0;
}
