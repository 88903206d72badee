#include "cli/environment.h"

#include <cstdlib>
#include <string>

#include "parity/fault_env.h"
#include "parity/parity_config.h"
#include "util/error.h"

namespace lockstep::cli {

namespace {

const char* get(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// A whole decimal number (integers only unless `fraction`), within [lo, hi].
double number(const char* name, const char* text, double lo, double hi, bool fraction = false) {
  const std::string s = text;
  size_t used = 0;
  double v = 0;
  try {
    v = fraction ? std::stod(s, &used) : double(std::stoll(s, &used));
  } catch (...) {
    used = 0;
  }
  if (used != s.size() || !(v >= lo && v <= hi))
    throw InputError(std::string(name) + " = '" + s + "' is not " +
                     (fraction ? "a number" : "an integer") + " in " + std::to_string(int64_t(lo)) +
                     ".." + std::to_string(int64_t(hi)));
  return v;
}

int one_of(const char* name, const char* text, std::initializer_list<int> allowed) {
  const int v = int(number(name, text, 0, 1 << 20));
  std::string list;
  for (int a : allowed) {
    if (v == a) return v;
    list += (list.empty() ? "" : ", ") + std::to_string(a);
  }
  throw InputError(std::string(name) + " = '" + text + "' is not one of " + list);
}

EnvironmentKnobs read_environment() {
  EnvironmentKnobs k;
  BackendOptions& o = k.backend;
  if (const char* v = get("LOCKSTEP_FAULT")) o.fault = parse_fault(v);
  if (const char* v = get("LOCKSTEP_PARITY_STEPS"))
    k.parity_steps = parse_parity_steps(v, "LOCKSTEP_PARITY_STEPS");
  if (const char* v = get("LOCKSTEP_TEST_SERVE_LOAD_DELAY_MS"))
    k.serve_load_delay_ms = int(number("LOCKSTEP_TEST_SERVE_LOAD_DELAY_MS", v, 0, 600000));

  if (const char* v = get("LOCKSTEP_VERDICT_CACHE")) {
    if (std::string(v) != "off") k.verdict_cache_dir = v;
  } else if (const char* xdg = get("XDG_CACHE_HOME")) {
    k.verdict_cache_dir = std::string(xdg) + "/lockstep/verdicts";
  } else if (const char* home = get("HOME")) {
    k.verdict_cache_dir = std::string(home) + "/.cache/lockstep/verdicts";
  }

  // CPU reference matmul (bench knobs).
  if (const char* v = get("LOCKSTEP_REF_CHUNK"))
    o.cpu.ref_matmul.prefill_chunk = one_of("LOCKSTEP_REF_CHUNK", v, {512, 1024, 2048});
  if (const char* v = get("LOCKSTEP_REF_DECODE_CHUNK"))
    o.cpu.ref_matmul.decode_chunk = one_of("LOCKSTEP_REF_DECODE_CHUNK", v, {512, 1024, 2048});
  if (const char* v = get("LOCKSTEP_REF_SLAB_KB"))
    o.cpu.ref_matmul.slab_bytes = int64_t(number("LOCKSTEP_REF_SLAB_KB", v, 0, 1 << 30)) * 1024;

  // Vulkan.
  if (const char* v = get("LOCKSTEP_VULKAN_DEVICE"))
    o.vulkan.device = int(number("LOCKSTEP_VULKAN_DEVICE", v, 0, 1 << 10));
  if (const char* v = get("LOCKSTEP_VULKAN_VALIDATION"))
    o.vulkan.validation = one_of("LOCKSTEP_VULKAN_VALIDATION", v, {0, 1}) == 1;
  if (const char* v = get("LOCKSTEP_VULKAN_PROFILE"))
    o.vulkan.profile = one_of("LOCKSTEP_VULKAN_PROFILE", v, {0, 1}) == 1;
  if (const char* v = get("LOCKSTEP_VULKAN_MATVEC_TEAM"))
    o.vulkan.matvec_team = int(one_of("LOCKSTEP_VULKAN_MATVEC_TEAM", v, {0, 4, 8, 16, 32}));
  if (const char* v = get("LOCKSTEP_VULKAN_MATVEC_ROWS"))
    o.vulkan.matvec_rows = int(one_of("LOCKSTEP_VULKAN_MATVEC_ROWS", v, {0, 1, 2, 4}));
  if (const char* v = get("LOCKSTEP_VULKAN_MATVEC_GROUPS"))
    o.vulkan.matvec_groups = int(number("LOCKSTEP_VULKAN_MATVEC_GROUPS", v, 0, 32768));
  if (const char* v = get("LOCKSTEP_VULKAN_GEMM_MIN_TOKENS"))
    o.vulkan.gemm_min_tokens = int(number("LOCKSTEP_VULKAN_GEMM_MIN_TOKENS", v, 0, 4096));
  if (const char* v = get("LOCKSTEP_VULKAN_FUSE_NORM"))
    o.vulkan.fuse_norm = one_of("LOCKSTEP_VULKAN_FUSE_NORM", v, {0, 1}) == 1;
  if (const char* v = get("LOCKSTEP_VULKAN_INT8"))
    o.vulkan.int8_inputs = one_of("LOCKSTEP_VULKAN_INT8", v, {0, 1}) == 1;
  if (const char* v = get("LOCKSTEP_VULKAN_Q6K_PAD"))
    o.vulkan.q6k_padded = one_of("LOCKSTEP_VULKAN_Q6K_PAD", v, {0, 1}) == 1;
  if (const char* v = get("LOCKSTEP_VULKAN_INT8_MIN_MIB"))
    o.vulkan.int8_min_bytes = int64_t(number("LOCKSTEP_VULKAN_INT8_MIN_MIB", v, 0, 1 << 20)) << 20;
  if (const char* v = get("LOCKSTEP_VULKAN_MAX_BATCH"))
    o.vulkan.max_batch = int(number("LOCKSTEP_VULKAN_MAX_BATCH", v, 1, 4096));

  // CUDA.
  if (const char* v = get("LOCKSTEP_CUDA_PRECISION")) {
    const std::string s = v;
    if (s != "f16" && s != "f32")
      throw InputError("LOCKSTEP_CUDA_PRECISION = '" + s + "' is not one of f16, f32");
    o.cuda.set_precision_f32(s == "f32");
  }
  if (const char* v = get("LOCKSTEP_CUDA_BATCH_GEMM_MIN"))
    o.cuda.batch_gemm_min = int(number("LOCKSTEP_CUDA_BATCH_GEMM_MIN", v, 0, 1 << 20));
  if (const char* v = get("LOCKSTEP_CUDA_BATCH_MMQ_MIN"))
    o.cuda.batch_mmq_min = int(number("LOCKSTEP_CUDA_BATCH_MMQ_MIN", v, 0, 1 << 20));
  CudaKernelTuning& t = o.cuda.tuning;
  if (const char* v = get("LOCKSTEP_CUDA_PDL")) t.pdl = one_of("LOCKSTEP_CUDA_PDL", v, {0, 1}) == 1;
  if (const char* v = get("LOCKSTEP_CUDA_PREFETCH_MB"))
    t.prefetch_mb = number("LOCKSTEP_CUDA_PREFETCH_MB", v, 0, 1e6, true);
  if (const char* v = get("LOCKSTEP_CUDA_Q8_ROWS"))
    t.q8_rows = one_of("LOCKSTEP_CUDA_Q8_ROWS", v, {1, 2, 4, 8});
  if (const char* v = get("LOCKSTEP_CUDA_MATVEC_ROWS"))
    t.matvec_rows = one_of("LOCKSTEP_CUDA_MATVEC_ROWS", v, {1, 2, 4, 8});
  if (const char* v = get("LOCKSTEP_CUDA_Q6K_INT8_MAX_COLS"))
    t.q6k_int8_max_cols = int64_t(number("LOCKSTEP_CUDA_Q6K_INT8_MAX_COLS", v, 0, 1 << 30));
  if (const char* v = get("LOCKSTEP_CUDA_MMQ_TILED"))
    t.mmq_tiled = one_of("LOCKSTEP_CUDA_MMQ_TILED", v, {0, 1}) == 1;
  if (const char* v = get("LOCKSTEP_CUDA_FLASH_PREFILL"))
    t.flash_prefill = one_of("LOCKSTEP_CUDA_FLASH_PREFILL", v, {0, 1}) == 1;
  return k;
}

}  // namespace

const EnvironmentKnobs& environment_knobs() {
  static const EnvironmentKnobs knobs = read_environment();
  return knobs;
}

}  // namespace lockstep::cli
