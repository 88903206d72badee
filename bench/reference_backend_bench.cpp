// Speed of the reference CPU backend on the parity gate's workload: a 64-token prompt in one
// forward call, then 3 single-token steps, on 7B shapes (Llama-2-7B, Qwen2.5-7B) with Q4_K weights
// (Q6_K output) built in memory from random but valid blocks. Also the pieces: one prefill
// matmul, one decode matmul and the cost of an empty ThreadPool::parallel_for.
//   reference_backend_bench --benchmark_filter=Gate --benchmark_min_time=1x
// Target (task brief): gate workload <= 2 s for a 7B shape on a 16-core host.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/matmul_ref.h"
#include "backend/cpu/reference_backend.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "quant/fp16.h"
#include "quant/quantize.h"
#include "util/thread_pool.h"

namespace {

using namespace lockstep;

struct Shape {
  const char* name;
  Arch arch;
  int64_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab;
};
const Shape kShapes[] = {
    {"llama2-7b", Arch::Llama, 4096, 32, 32, 32, 11008, 32000},
    {"qwen2.5-7b", Arch::Qwen2, 3584, 28, 28, 4, 18944, 152064},
};

// Random bytes with every block's fp16 scales set to small sane values: valid Q4_K / Q6_K data
// without paying for quantization of billions of values.
void fill_random_blocks(TensorType type, uint8_t* dst, uint64_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    std::memcpy(dst + i, &s, 8);
  }
  for (; i < n; ++i) dst[i] = uint8_t(i);
  const uint16_t scale = fp32_to_fp16(2e-3f);
  if (type == TensorType::Q4_K) {
    for (uint64_t b = 0; b + 144 <= n; b += 144) {
      std::memcpy(dst + b, &scale, 2);      // d
      std::memcpy(dst + b + 2, &scale, 2);  // dmin
    }
  } else if (type == TensorType::Q6_K) {
    for (uint64_t b = 0; b + 210 <= n; b += 210) std::memcpy(dst + b + 208, &scale, 2);  // d
  }
}

std::unique_ptr<Model> make_model(const Shape& s) {
  using gguf::Value;
  gguf::GgufWriter w;
  const std::string a = arch_name(s.arch);
  w.set("general.architecture", Value::of_string(a));
  w.set(a + ".embedding_length", Value::of_u32(uint32_t(s.n_embd)));
  w.set(a + ".block_count", Value::of_u32(uint32_t(s.n_layer)));
  w.set(a + ".feed_forward_length", Value::of_u32(uint32_t(s.n_ff)));
  w.set(a + ".attention.head_count", Value::of_u32(uint32_t(s.n_head)));
  w.set(a + ".attention.head_count_kv", Value::of_u32(uint32_t(s.n_head_kv)));
  w.set(a + ".context_length", Value::of_u32(4096));
  const int64_t hd = s.n_embd / s.n_head;
  std::vector<TensorType> types;
  auto add = [&](const std::string& name, TensorType t, std::vector<int64_t> ne) {
    w.add_tensor(name, t, std::move(ne));
    types.push_back(t);
  };
  add("token_embd.weight", TensorType::Q4_K, {s.n_embd, s.n_vocab});
  add("output_norm.weight", TensorType::F32, {s.n_embd});
  add("output.weight", TensorType::Q6_K, {s.n_embd, s.n_vocab});
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", TensorType::F32, {s.n_embd});
    add(b + "attn_q.weight", TensorType::Q4_K, {s.n_embd, s.n_head * hd});
    add(b + "attn_k.weight", TensorType::Q4_K, {s.n_embd, s.n_head_kv * hd});
    add(b + "attn_v.weight", TensorType::Q4_K, {s.n_embd, s.n_head_kv * hd});
    add(b + "attn_output.weight", TensorType::Q4_K, {s.n_head * hd, s.n_embd});
    if (s.arch == Arch::Qwen2) {
      add(b + "attn_q.bias", TensorType::F32, {s.n_head * hd});
      add(b + "attn_k.bias", TensorType::F32, {s.n_head_kv * hd});
      add(b + "attn_v.bias", TensorType::F32, {s.n_head_kv * hd});
    }
    add(b + "ffn_norm.weight", TensorType::F32, {s.n_embd});
    add(b + "ffn_gate.weight", TensorType::Q4_K, {s.n_embd, s.n_ff});
    add(b + "ffn_up.weight", TensorType::Q4_K, {s.n_embd, s.n_ff});
    add(b + "ffn_down.weight", TensorType::Q4_K, {s.n_ff, s.n_embd});
  }
  auto bytes = w.to_bytes([&](size_t k, uint8_t* dst, uint64_t n) {
    if (types[k] == TensorType::F32) {
      for (uint64_t i = 0; i < n / 4; ++i)
        reinterpret_cast<float*>(dst)[i] = 1.0f + 1e-3f * float(i % 7);
    } else {
      fill_random_blocks(types[k], dst, n, k);
    }
  });
  return std::make_unique<Model>(
      Model::from_file(gguf::GgufFile::from_bytes(std::move(bytes), s.name)));
}

const Model& model_for(const Shape& s) {
  static std::map<std::string, std::unique_ptr<Model>> cache;
  auto& m = cache[s.name];
  if (!m) m = make_model(s);
  return *m;
}

// The gate's workload: prefill of 64 (all logits, as a parity comparison reads every row) + 3
// steps.
void bm_gate_workload(benchmark::State& state, const Shape* shape) {
  const Model& model = model_for(*shape);
  ReferenceBackend b(model, int(state.range(0)), 128);
  std::vector<int32_t> prompt(64);
  for (size_t i = 0; i < prompt.size(); ++i)
    prompt[i] = int32_t((i * 7919) % size_t(shape->n_vocab));
  std::vector<float> logits(size_t(64 * shape->n_vocab));
  double prefill_s = 0, decode_s = 0;
  for (auto _ : state) {
    b.truncate(0);
    auto t0 = std::chrono::steady_clock::now();
    b.forward(prompt, logits.data(), true);
    auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
      const int32_t next = int32_t(i + 1);
      b.forward(std::span(&next, 1), logits.data(), false);
    }
    auto t2 = std::chrono::steady_clock::now();
    prefill_s += std::chrono::duration<double>(t1 - t0).count();
    decode_s += std::chrono::duration<double>(t2 - t1).count();
    benchmark::DoNotOptimize(logits.data());
  }
  const double n = double(state.iterations());
  state.counters["prefill64_s"] = prefill_s / n;
  state.counters["decode_ms_per_token"] = 1e3 * decode_s / (3 * n);
  state.counters["threads"] = b.n_threads();
}

// One Q4_K matmul of rows x cols for n_tokens tokens (range 0) on range 1 threads with panels of
// range 2 rows (0: by the size of the input slab).
void bm_matmul_q4k(benchmark::State& state, int64_t rows, int64_t cols) {
  const int64_t n_tokens = state.range(0);
  const uint64_t rb = *row_bytes(TensorType::Q4_K, cols);
  std::vector<uint8_t> data(rb * uint64_t(rows));
  fill_random_blocks(TensorType::Q4_K, data.data(), data.size(), 1);
  WeightView w;
  w.name = "bench";
  w.type = TensorType::Q4_K;
  w.cols = cols;
  w.rows = rows;
  w.row_bytes = rb;
  w.data = data.data();
  ThreadPool pool(int(state.range(1)));
  cpu_ref::MatmulScratch scratch(pool.size(), cols);
  scratch.set_panel_rows(state.range(2));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(cols * n_tokens)), y(size_t(rows * n_tokens));
  for (auto& v : x) v = nd(rng);
  for (auto _ : state) {
    cpu_ref::matmul(y.data(), w, x.data(), n_tokens, pool, scratch);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(rows * cols * n_tokens),
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GB/s"] =
      benchmark::Counter(double(data.size()), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}

// dequantize_row alone, one thread: the floor of a decode step, which dequantizes every weight.
void bm_dequantize_row(benchmark::State& state, TensorType type) {
  const int64_t cols = 4096, rows = 64;
  const uint64_t rb = *row_bytes(type, cols);
  std::vector<uint8_t> data(rb * uint64_t(rows));
  fill_random_blocks(type, data.data(), data.size(), 2);
  std::vector<float> out(static_cast<size_t>(cols));
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(type, data.data() + uint64_t(r) * rb, out.data(), cols);
      benchmark::DoNotOptimize(out.data());
    }
  }
  state.counters["ns_per_element"] =
      benchmark::Counter(double(cols * rows) * 1e-9, benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
}

void bm_parallel_for_overhead(benchmark::State& state) {
  ThreadPool pool(int(state.range(0)));
  std::vector<int64_t> sink(size_t(pool.size()) * 16);
  for (auto _ : state) {
    pool.parallel_for(int64_t(pool.size()),
                      [&](int64_t b, int64_t e, int t) { sink[size_t(t) * 16] += e - b; });
  }
  benchmark::DoNotOptimize(sink.data());
}

const int kRegistered = [] {
  const int threads = default_thread_count();
  for (const Shape& s : kShapes)
    benchmark::RegisterBenchmark((std::string("Gate/") + s.name).c_str(), bm_gate_workload, &s)
        ->Arg(threads)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Iterations(2);
  // Llama-2-7B's FFN, Qwen2.5-7B's ffn_down (the widest input: 64 tokens of it are 4.8 MB),
  // Qwen2.5-0.5B's ffn_down; decode, and prefill with the panel heights worth comparing.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{11008, 4096}, {3584, 18944}, {896, 4864}})
    benchmark::RegisterBenchmark(
        ("MatmulQ4K_" + std::to_string(rows) + "x" + std::to_string(cols)).c_str(), bm_matmul_q4k,
        rows, cols)
        ->Args({1, threads, 0})
        ->ArgsProduct({{64}, {threads}, {0, 8, 32, 64}})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  benchmark::RegisterBenchmark("DequantizeRow/Q4_K", bm_dequantize_row, TensorType::Q4_K);
  benchmark::RegisterBenchmark("DequantizeRow/Q6_K", bm_dequantize_row, TensorType::Q6_K);
  benchmark::RegisterBenchmark("ParallelForOverhead", bm_parallel_for_overhead)
      ->Arg(threads)
      ->UseRealTime();
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
