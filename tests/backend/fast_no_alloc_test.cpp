// The fast path allocates nothing per token: every buffer is sized when the backend is made.
// Checked by counting calls of the global operator new (replaced in this test binary; it only
// counts while a test asks it to) around decode steps and prefill batches.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include "backend/fast_compare.h"
#include "backend/random_data.h"
#include "backend/synthetic_model.h"

namespace {

std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};

void* counted_alloc(std::size_t size, std::size_t align) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (size == 0) size = 1;
  void* p = align > alignof(std::max_align_t)
                ? std::aligned_alloc(align, (size + align - 1) / align * align)
                : std::malloc(size);
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t size) {
  return counted_alloc(size, 0);
}
void* operator new[](std::size_t size) {
  return counted_alloc(size, 0);
}
void* operator new(std::size_t size, std::align_val_t align) {
  return counted_alloc(size, std::size_t(align));
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return counted_alloc(size, std::size_t(align));
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

namespace lockstep::backend_test {
namespace {

TEST(FastBackendAllocations, NoneWhileDecodingOrPrefilling) {
  std::mt19937_64 rng(fresh_seed());
  for (TensorType type : {TensorType::Q4_K, TensorType::Q5_0, TensorType::F16}) {
    SCOPED_TRACE(tensor_type_info(type).name);
    SyntheticSpec spec;
    spec.arch = Arch::Qwen2;
    spec.type = type;
    spec.n_embd = 256;
    spec.n_ff = 512;
    spec.seed = rng();
    Model model = make_synthetic_model(spec);
    const size_t V = size_t(model.hp.n_vocab);
    auto fast = make_fast(model, 2, 128, cpu::KvType::F16, 16);
    std::vector<int32_t> tokens(40);
    for (auto& t : tokens) t = int32_t(rng() % V);
    std::vector<float> logits(40 * V);
    // Warm-up: first calls may set up process-wide kernel tables.
    fast->forward(std::span(tokens.data(), 3), logits.data(), true);
    fast->truncate(0);

    g_allocations = 0;
    g_counting = true;
    fast->forward(std::span(tokens.data(), 20), logits.data(), true);  // 2 batches of 16 + 4
    for (size_t i = 20; i < 40; ++i)
      fast->forward(std::span(tokens.data() + i, 1), logits.data(), false);
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 0);
  }
}

}  // namespace
}  // namespace lockstep::backend_test
