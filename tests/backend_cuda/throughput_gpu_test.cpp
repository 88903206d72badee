// BENCHMARKS, not tests: DISABLED_ so that ctest never runs them; scripts/gpu-check.sh runs them
// with --gtest_also_run_disabled_tests and bench/NOTES.md records the numbers. They assert
// nothing about time, only that the outputs are finite.
//
// Each builds a synthetic model with the exact shapes of a published one and the tensor types
// llama-quantize gives a Q4_K_M file (random block bytes with sane scales: speed does not depend
// on the values), opens it on the GPU through the parity gate with --parity off, and measures
// llama-bench's pp512 (one 512-token prompt) and tg128 (128 single-token steps from an empty
// cache), plus the achieved memory bandwidth of the decode matrix-vector kernels.
#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include <cuda_runtime.h>
#include <chrono>
#include <cstdio>

#include "gguf/gguf_writer.h"
#include "model/presets.h"
#include "model/synthetic_quant_mix.h"
#include "parity/gate.h"
#include "quant/fp16.h"

namespace lockstep::cuda_test {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string write_synthetic(const std::string& preset_name) {
  const ModelPreset* p = find_model_preset(preset_name);
  EXPECT_NE(p, nullptr);
  const QuantScheme* scheme = find_quant_scheme("q4_k_m");
  const std::string path = "/tmp/lockstep-bench-" + preset_name + "-q4_k_m.gguf";
  gguf::GgufWriter w;
  const std::string a = "qwen2";
  w.set("general.architecture", gguf::Value::of_string(a));
  w.set("general.name", gguf::Value::of_string(p->general_name));
  w.set("general.file_type", gguf::Value::of_u32(scheme->file_type));
  w.set(a + ".context_length", gguf::Value::of_u32(uint32_t(p->n_ctx)));
  w.set(a + ".embedding_length", gguf::Value::of_u32(uint32_t(p->n_embd)));
  w.set(a + ".block_count", gguf::Value::of_u32(uint32_t(p->n_layer)));
  w.set(a + ".feed_forward_length", gguf::Value::of_u32(uint32_t(p->n_ff)));
  w.set(a + ".attention.head_count", gguf::Value::of_u32(uint32_t(p->n_head)));
  w.set(a + ".attention.head_count_kv", gguf::Value::of_u32(uint32_t(p->n_head_kv)));
  w.set(a + ".attention.layer_norm_rms_epsilon", gguf::Value::of_f32(p->rms_eps));
  w.set(a + ".rope.freq_base", gguf::Value::of_f32(p->rope_freq_base));
  HParams hp;
  hp.arch = Arch::Qwen2;
  hp.n_embd = p->n_embd, hp.n_layer = p->n_layer, hp.n_ff = p->n_ff, hp.n_head = p->n_head;
  hp.n_head_kv = p->n_head_kv, hp.head_dim = p->n_embd / p->n_head, hp.n_vocab = p->n_vocab;
  hp.has_qkv_bias = true;
  struct Planned {
    TensorType type;
    std::vector<int64_t> ne;
  };
  std::vector<Planned> plan;
  for (const auto& e : expected_tensors(hp)) {
    if (e.name == "output.weight" && p->tied_embeddings) continue;
    int64_t layer = -1;
    if (e.name.rfind("blk.", 0) == 0) layer = std::stoll(e.name.substr(4));
    const TensorType t =
        llama_cpp_tensor_type(*scheme, e.name, e.ne, layer, p->n_layer, !p->tied_embeddings);
    w.add_tensor(e.name, t, e.ne);
    plan.push_back({t, e.ne});
  }
  w.write(
      path,
      [&](size_t index, uint8_t* dst, uint64_t n_bytes) {
        const Planned& t = plan[index];
        std::mt19937_64 rng(index + 1);
        if (t.ne.size() == 1) {  // norms and biases, F32
          std::normal_distribution<float> nd(0.0f, 0.05f);
          for (uint64_t i = 0; i < n_bytes / 4; ++i) {
            const float v = 1.0f + nd(rng);
            std::memcpy(dst + 4 * i, &v, 4);
          }
          return;
        }
        const std::vector<uint8_t> rows =
            random_weights(rng, t.type, 64, t.ne[0], 1.0f / std::sqrt(float(t.ne[0])), false);
        for (uint64_t off = 0; off < n_bytes; off += rows.size())
          std::memcpy(dst + off, rows.data(), std::min<uint64_t>(rows.size(), n_bytes - off));
      },
      int(std::thread::hardware_concurrency()));
  return path;
}

void bench_model(const std::string& preset, const std::vector<const char*>& precisions) {
  auto t0 = Clock::now();
  const std::string path = write_synthetic(preset);
  const double write_s = seconds_since(t0);
  const Model m = Model::load(path);
  for (const char* precision : precisions) {
    t0 = Clock::now();
    OpenRequest req;
    req.backend = "cuda";
    req.options.n_ctx = 1024;
    req.options.cuda.set_precision_f32(std::string(precision) == "f32");
    ParityConfig cfg;
    cfg.policy = ParityPolicy::Off;
    auto backend = std::move(ParityGate::open(m, req, cfg, {}, false).backend);
    const double load_s = seconds_since(t0);
    const size_t V = size_t(m.hp.n_vocab);
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(V - 1));
    std::vector<int32_t> prompt(512);
    for (auto& t : prompt) t = tok(rng);
    std::vector<float> logits(V);

    // pp512: warm-up, then the best of 3 (cuBLAS picks its kernels on the first call).
    double pp_best = 1e30;
    for (int rep = 0; rep < 4; ++rep) {
      backend->truncate(0);
      const auto t = Clock::now();
      backend->forward(prompt, logits.data(), false);
      if (rep > 0) pp_best = std::min(pp_best, seconds_since(t));
    }
    for (float x : logits) ASSERT_TRUE(std::isfinite(x));
    // tg128: 128 single-token steps from an empty cache (after a warm-up that captures the graph).
    double tg_best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      backend->truncate(0);
      int32_t t = prompt[0];
      const auto t_start = Clock::now();
      for (int i = 0; i < 128; ++i) {
        backend->forward({&t, 1}, logits.data(), false);
        t = argmax(logits.data(), V);
      }
      if (rep > 0) tg_best = std::min(tg_best, seconds_since(t_start));
    }
    for (float x : logits) ASSERT_TRUE(std::isfinite(x));
    const auto info = cuda_device_info(0);
    std::fprintf(stderr,
                 "[bench] %s q4_k_m (synthetic, %.2f GiB file), precision %s, on %s: pp512 %.0f "
                 "tok/s, tg128 %.1f tok/s (%.3f ms/token); write %.1f s, load+upload %.1f s\n",
                 preset.c_str(), double(m.file->file_size()) / double(1ull << 30), precision,
                 info.name.c_str(), 512.0 / pp_best, 128.0 / tg_best, tg_best / 128.0 * 1e3,
                 write_s, load_s);
  }
  std::remove(path.c_str());
}

TEST(CudaThroughput, DISABLED_Qwen25_7B_Q4_K_M) {
  REQUIRE_CUDA_DEVICE();
  bench_model("qwen2.5-7b", {"f16", "f32"});
}

TEST(CudaThroughput, DISABLED_Qwen25_0_5B_Q4_K_M) {
  REQUIRE_CUDA_DEVICE();
  bench_model("qwen2.5-0.5b", {"f16"});
}

// Achieved DRAM bandwidth of single matrix-vector products (weight bytes / kernel time).
TEST(CudaThroughput, DISABLED_MatvecBandwidth) {
  REQUIRE_CUDA_DEVICE();
  struct Case {
    TensorType type;
    int64_t rows, cols;
  };
  const Case cases[] = {{TensorType::Q4_K, 3584, 3584},   {TensorType::Q4_K, 18944, 3584},
                        {TensorType::Q4_K, 3584, 18944},  {TensorType::Q6_K, 3584, 18944},
                        {TensorType::Q6_K, 152064, 3584}, {TensorType::Q8_0, 151936, 896},
                        {TensorType::Q5_0, 4864, 896},    {TensorType::F16, 4096, 4096}};
  std::mt19937_64 rng(2);
  for (const auto& c : cases) {
    const auto w = random_weights(rng, c.type, 64, c.cols, 0.02f, false);
    const uint64_t rb = *row_bytes(c.type, c.cols), bytes = rb * uint64_t(c.rows);
    uint8_t* d_w = static_cast<uint8_t*>(cuda_ops::device_alloc(bytes));
    for (uint64_t off = 0; off < bytes; off += w.size())
      cuda_ops::copy_to_device(d_w + off, w.data(), std::min<uint64_t>(w.size(), bytes - off));
    DeviceBuffer<float> x(random_normal(rng, size_t(c.cols), 1.0f)), y(static_cast<size_t>(c.rows));
    DeviceBuffer<uint8_t> scratch(cuda_ops::act_q8_scratch_bytes(c.cols));
    const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(scratch.get(), c.cols);
    // Without and with the input-quantization scratch (the backend always passes one; only
    // Q4_K and Q6_K use it): float activations against the int8 path (quantizing launch +
    // product).
    for (const cuda_ops::ActQ8Scratch* s :
         {static_cast<const cuda_ops::ActQ8Scratch*>(nullptr), &act}) {
      if (s && c.type != TensorType::Q4_K && c.type != TensorType::Q6_K) continue;
      cudaEvent_t a, b;
      cudaEventCreate(&a);
      cudaEventCreate(&b);
      for (int i = 0; i < 5; ++i)
        cuda_ops::matvec(c.type, d_w, c.rows, c.cols, x.get(), y.get(), nullptr,
                         cuda_ops::MatvecMode::Store, nullptr, s);
      const int reps = 50;
      cudaEventRecord(a);
      for (int i = 0; i < reps; ++i)
        cuda_ops::matvec(c.type, d_w, c.rows, c.cols, x.get(), y.get(), nullptr,
                         cuda_ops::MatvecMode::Store, nullptr, s);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      const double us = double(ms) * 1e3 / reps;
      std::fprintf(stderr, "[bench] matvec %s %lld x %lld%s: %.1f us, %.0f GB/s\n",
                   tensor_type_info(c.type).name, (long long)c.rows, (long long)c.cols,
                   s ? " (int8 path)" : "", us, double(bytes) / (us * 1e3));
      cudaEventDestroy(a);
      cudaEventDestroy(b);
    }
    cuda_ops::device_free(d_w);
  }
}

// Microseconds per call of fn (after 3 warm-up calls), from CUDA events on the default stream.
template <class F>
double time_us(F&& fn, int reps = 20) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a);
  for (int i = 0; i < reps; ++i) fn();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return double(ms) * 1e3 / reps;
}

// The three routes of a batched decode step's products, per product, at the Qwen2.5 7B and 0.5B
// Q4_K_M shapes: the mmq kernels (with their input-quantizing launch; the tiled kernel, then the
// 16-row one), the batched matvecs (with
// theirs) and the F16 GEMMs (dequantized tiles + cuBLAS), for B = 8 .. 128 tokens. mmq also as
// weight bandwidth (bytes of the matrix / time) and int8 tensor throughput (2 terms x 2 B rows x
// cols ops / time).
TEST(CudaThroughput, DISABLED_MmqAgainstOtherRoutes) {
  REQUIRE_CUDA_DEVICE();
  struct Case {
    TensorType type;
    int64_t rows, cols;
  };
  const Case cases[] = {{TensorType::Q4_K, 18944, 3584},  {TensorType::Q4_K, 3584, 3584},
                        {TensorType::Q4_K, 3584, 18944},  {TensorType::Q6_K, 3584, 18944},
                        {TensorType::Q6_K, 152064, 3584}, {TensorType::Q5_0, 4864, 896},
                        {TensorType::Q5_0, 896, 896},     {TensorType::Q6_K, 896, 4864},
                        {TensorType::Q8_0, 151936, 896}};
  constexpr int64_t kMaxTok = 128;
  std::mt19937_64 rng(4);
  for (const auto& c : cases) {
    const auto w = random_weights(rng, c.type, 64, c.cols, 0.02f, false);
    const uint64_t rb = *row_bytes(c.type, c.cols), bytes = rb * uint64_t(c.rows);
    uint8_t* d_w = static_cast<uint8_t*>(cuda_ops::device_alloc(bytes));
    for (uint64_t off = 0; off < bytes; off += w.size())
      cuda_ops::copy_to_device(d_w + off, w.data(), std::min<uint64_t>(w.size(), bytes - off));
    DeviceBuffer<float> x(random_normal(rng, size_t(c.cols * kMaxTok), 1.0f));
    DeviceBuffer<float> y(size_t(c.rows * kMaxTok));
    DeviceBuffer<uint8_t> scratch(cuda_ops::act_q8_scratch_bytes(c.cols, kMaxTok));
    const cuda_ops::ActQ8Scratch act = cuda_ops::act_q8_scratch(scratch.get(), c.cols, kMaxTok);
    cuda_ops::Matmul gemm(size_t(c.cols * kMaxTok), size_t(32) << 20, false);
    for (int64_t n : {8, 16, 32, 64, 128}) {
      // Each mmq kernel by the tuning switch (process-wide), restored after.
      const CudaKernelTuning saved = cuda_ops::kernel_tuning();
      auto mmq_us = [&](bool tiled) {
        CudaKernelTuning t = saved;
        t.mmq_tiled = tiled;
        cuda_ops::set_kernel_tuning(t);
        const double us = time_us([&] {
          cuda_ops::mmq(c.type, d_w, c.rows, c.cols, x.get(), n, y.get(), nullptr,
                        cuda_ops::MatvecMode::Store, nullptr, act);
        });
        cuda_ops::set_kernel_tuning(saved);
        return us;
      };
      const double mmq = mmq_us(true), mmq16 = mmq_us(false);
      const double mv = time_us([&] {
        cuda_ops::matvec_batch(c.type, d_w, c.rows, c.cols, x.get(), n, y.get(), nullptr,
                               cuda_ops::MatvecMode::Store, nullptr, &act);
      });
      const double gm = time_us([&] {
        gemm.run(c.type, d_w, c.rows, c.cols, x.get(), n, y.get(), c.rows, false, nullptr);
      });
      std::fprintf(stderr,
                   "[bench] B %3lld %s %lld x %lld: mmq %8.1f us (%5.0f GB/s, %5.1f int8 TOPS)"
                   "  mmq 16-row %8.1f us  matvec %8.1f us  gemm %8.1f us\n",
                   (long long)n, tensor_type_info(c.type).name, (long long)c.rows,
                   (long long)c.cols, mmq, double(bytes) / (mmq * 1e3),
                   4.0 * double(n) * double(c.rows) * double(c.cols) / (mmq * 1e6), mmq16, mv, gm);
    }
    cuda_ops::synchronize();
    const std::vector<float> out = y.download();
    for (size_t i = 0; i < 1000; ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;
    cuda_ops::device_free(d_w);
  }
}

// Where prefill and decode time goes, op by op, at Qwen2.5-7B shapes.
TEST(CudaThroughput, DISABLED_OpBreakdown7B) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(3);
  const int n_head = 28, n_kv = 4, hd = 128, E = 3584, F = 18944, T = 512, ctx = 4096;
  const cuda_ops::AttentionParams ap{n_head, n_kv, hd, float(1.0 / std::sqrt(128.0))};
  DeviceBuffer<uint8_t> kc(size_t(ctx) * n_kv * hd * 2, 0x3C),
      vc(size_t(ctx) * n_kv * hd * 2, 0x3C);
  DeviceBuffer<float> q(random_normal(rng, size_t(T) * n_head * hd, 1.0f)),
      out(size_t(T) * n_head * hd);
  DeviceBuffer<int32_t> pos0(std::vector<int32_t>{0}), pos_far(std::vector<int32_t>{4000});
  // Both prefill kernels: the tensor-core one (the default on F16) and the FP32 one, from an
  // empty cache and after 3584 cached positions (the chunk's last query then sees 4096 keys).
  DeviceBuffer<int32_t> pos_chunk(std::vector<int32_t>{ctx - T});
  for (bool flash : {true, false})
    for (auto* p : {&pos0, &pos_chunk}) {
      CudaKernelTuning t = cuda_ops::kernel_tuning(), saved = t;
      t.flash_prefill = flash;
      cuda_ops::set_kernel_tuning(t);
      const double us_pf = time_us([&] {
        cuda_ops::attention_prefill(q.get(), kc.get(), vc.get(), cuda_ops::KvType::F16, out.get(),
                                    T, p->get(), ap, nullptr);
      });
      cuda_ops::set_kernel_tuning(saved);
      const double past = p == &pos0 ? 0.0 : double(ctx - T);
      const double flops = 4.0 * n_head * hd * (double(T) * (T + 1) / 2 + double(T) * past);
      std::fprintf(stderr,
                   "[bench] attention_prefill (%s) 28/4x128, 512 tokens after %.0f: %.0f us "
                   "(%.1f TFLOP/s)\n",
                   flash ? "tensor cores" : "fp32", past, us_pf, flops / us_pf * 1e-6);
    }
  DeviceBuffer<float> part(cuda_ops::attention_decode_scratch_floats(ctx, ap));
  for (auto* p : {&pos0, &pos_far}) {
    const double us = time_us([&] {
      cuda_ops::attention_decode(q.get(), kc.get(), vc.get(), cuda_ops::KvType::F16, out.get(),
                                 part.get(), p->get(), ctx, ap, nullptr);
    });
    std::fprintf(stderr, "[bench] attention_decode 28/4x128 at pos %d (n_ctx 4096): %.1f us\n",
                 p == &pos0 ? 0 : 4000, us);
  }
  // Prefill GEMM of ffn_gate: dequantize to F16 alone, then dequantize + cuBLAS.
  const auto wrow = random_weights(rng, TensorType::Q4_K, 64, E, 0.02f, false);
  const uint64_t bytes = uint64_t(wrow.size() / 64) * F;
  uint8_t* w = static_cast<uint8_t*>(cuda_ops::device_alloc(bytes));
  for (uint64_t off = 0; off < bytes; off += wrow.size())
    cuda_ops::copy_to_device(w + off, wrow.data(), std::min<uint64_t>(wrow.size(), bytes - off));
  DeviceBuffer<uint16_t> tile(size_t(32) << 20);
  const int64_t tile_rows = (int64_t(32) << 20) / E;
  const double us_dq = time_us([&] {
    for (int64_t r0 = 0; r0 < F; r0 += tile_rows)
      cuda_ops::dequantize_rows_f16(TensorType::Q4_K, w, E, r0,
                                    std::min<int64_t>(tile_rows, F - r0), tile.get(), nullptr,
                                    nullptr);
  });
  std::fprintf(stderr, "[bench] dequantize Q4_K %d x %d to F16: %.0f us (%.0f GB/s written)\n", F,
               E, us_dq, double(F) * E * 2 / (us_dq * 1e3));
  DeviceBuffer<float> x(random_normal(rng, size_t(T) * E, 1.0f)), y(size_t(T) * F);
  for (int variant = 0; variant < 4; ++variant) {
    const bool precise = variant == 3;
    const size_t tile = variant == 1   ? size_t(8) << 20
                        : variant == 2 ? size_t(2) << 20
                                       : size_t(32) << 20;
    cuda_ops::Matmul mm(size_t(T) * F, tile, precise);
    const double us = time_us(
        [&] { mm.run(TensorType::Q4_K, w, F, E, x.get(), T, y.get(), F, false, nullptr); }, 5);
    std::fprintf(stderr,
                 "[bench] matmul Q4_K %d x %d, 512 tokens, tile %zuM%s: %.0f us (%.0f TFLOP/s)\n",
                 F, E, tile >> 20, precise ? " (precise)" : "", us, 2.0 * F * E * T / (us * 1e6));
  }
  cuda_ops::device_free(w);
  DeviceBuffer<float> h(random_normal(rng, size_t(T) * E, 1.0f)),
      nw(random_normal(rng, size_t(E), 1.0f)), hn(size_t(T) * E);
  for (int rows : {1, 512}) {
    const double us =
        time_us([&] { cuda_ops::rmsnorm(h.get(), nw.get(), hn.get(), rows, E, 1e-6f, nullptr); });
    std::fprintf(stderr, "[bench] rmsnorm %d x %d: %.1f us\n", rows, E, us);
  }
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaThroughput, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
