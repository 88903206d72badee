#include "backend/registry.h"

#include <algorithm>

#include "backend/cpu/cpu_backend.h"
#include "quant/vec_dot.h"
#include "util/error.h"
#ifdef LOCKSTEP_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#ifdef LOCKSTEP_HAVE_VULKAN
#include "backend/vulkan/vulkan_backend.h"
#endif

namespace lockstep {

namespace {

bool always(const BackendOptions&, std::string*) {
  return true;
}

#ifdef LOCKSTEP_HAVE_CUDA
bool cuda_available(const BackendOptions&, std::string* why) {
  return cuda_device_available(why);
}
#else
// A build without CUDA still knows the name, so that --backend cuda says why it cannot run.
constexpr const char* kNoCuda =
    "this lockstep was built without CUDA (LOCKSTEP_CUDA=OFF or no nvcc)";
bool cuda_available(const BackendOptions&, std::string* why) {
  if (why) *why = kNoCuda;
  return false;
}
std::unique_ptr<GatedBackend> create_cuda_backend(const Model&, const BackendOptions&, GateKey) {
  throw Error(kNoCuda, kExitDevice);
}
#endif

#ifdef LOCKSTEP_HAVE_VULKAN
// `auto` takes a Vulkan GPU only, or the device named by options.vulkan.device (which may be a CPU
// implementation such as lavapipe: the user asked for it); any device serves when forced.
bool vulkan_available(const BackendOptions& options, std::string* why) {
  return vulkan_device_available(why, options.vulkan.device);
}
#else
constexpr const char* kNoVulkan =
    "this lockstep was built without Vulkan (LOCKSTEP_VULKAN=OFF, or no Vulkan headers or glslc "
    "at build time)";
bool vulkan_available(const BackendOptions&, std::string* why) {
  if (why) *why = kNoVulkan;
  return false;
}
std::unique_ptr<GatedBackend> create_vulkan_backend(const Model&, const BackendOptions&, GateKey) {
  throw Error(kNoVulkan, kExitDevice);
}
#endif

std::vector<BackendEntry> make_registry() {
  std::vector<BackendEntry> r;
  BackendEntry ref;
  ref.name = "cpu-ref";
  ref.help = "the CPU reference (float activations, float32 KV cache): what the gate trusts";
  ref.is_reference = true;
  ref.available = always;
  ref.create_reference = make_reference_backend;
  r.push_back(ref);

  BackendEntry cpu;
  cpu.name = "cpu";
  cpu.help = "the fast CPU path (SIMD, two-term int8 activations, F16 KV cache), gated";
  cpu.auto_rank = 1;
  cpu.available = always;
  cpu.create_gated = [](const Model& m, const BackendOptions& o, GateKey) {
    return make_fast_cpu_backend(m, o);
  };
  // Thread-independent (tests/backend/fast_backend_test.cpp); the kernels are chosen by the ISA.
  cpu.deterministic_identity = [](const BackendOptions& o) {
    return std::string("isa=") + isa_name(active_isa()) + ";kv=" + kv_type_name(o.cpu.fast_kv);
  };
  r.push_back(cpu);

  BackendEntry cuda;
  cuda.name = "cuda";
  cuda.help = "an NVIDIA GPU, gated";
  cuda.auto_rank = 10;
  cuda.is_device = true;
  cuda.available = cuda_available;
  // Every architecture of the CPU reference (qwen3, gemma2/3, phi3, rope factors, YaRN).
  cuda.create_gated = [](const Model& m, const BackendOptions& o, GateKey key) {
    return create_cuda_backend(m, o, key);
  };
  r.push_back(cuda);

  BackendEntry vulkan;
  vulkan.name = "vulkan";
  vulkan.help = "a Vulkan GPU (any vendor; Mesa's lavapipe when forced), gated";
  vulkan.auto_rank = 5;  // after cuda, before the CPU
  vulkan.is_device = true;
  vulkan.available = vulkan_available;
  vulkan.create_gated = [](const Model& m, const BackendOptions& o, GateKey key) {
    require_plain_architecture(m, "vulkan", /*rope_variants=*/true);
    return create_vulkan_backend(m, o, key);
  };
  r.push_back(vulkan);
  return r;
}

}  // namespace

const std::vector<BackendEntry>& backend_registry() {
  static const std::vector<BackendEntry> registry = make_registry();
  return registry;
}

const BackendEntry* find_backend(std::string_view name) {
  for (const BackendEntry& e : backend_registry())
    if (name == e.name) return &e;
  return nullptr;
}

const BackendEntry& reference_backend_entry() {
  for (const BackendEntry& e : backend_registry())
    if (e.is_reference) return e;
  throw Error("backend registry: no reference backend");
}

std::string backend_choices() {
  std::string s = "auto";
  for (const BackendEntry& e : backend_registry()) s += std::string(", ") + e.name;
  return s;
}

std::string validate_backend_name(const std::string& name) {
  if (name == "auto" || find_backend(name)) return {};
  return "--backend must be one of " + backend_choices() + "; got '" + name + "'";
}

std::vector<const BackendEntry*> auto_candidates(const BackendOptions& options) {
  std::vector<const BackendEntry*> out;
  for (const BackendEntry& e : backend_registry())
    if (e.auto_rank > 0 && e.available(options, nullptr)) out.push_back(&e);
  std::stable_sort(out.begin(), out.end(), [](const BackendEntry* a, const BackendEntry* b) {
    return a->auto_rank > b->auto_rank;
  });
  return out;
}

std::vector<std::string> available_backends(const BackendOptions& options) {
  std::vector<std::string> names;
  for (const BackendEntry& e : backend_registry())
    if (e.available(options, nullptr)) names.push_back(e.name);
  return names;
}

std::string backend_for_gpu_layers(bool on_device) {
  const BackendEntry* best = nullptr;
  for (const BackendEntry& e : backend_registry())
    if (e.auto_rank > 0 && e.is_device == on_device && (!best || e.auto_rank > best->auto_rank))
      best = &e;
  if (!best) throw Error("backend registry: no backend for -ngl");
  return best->name;
}

std::unique_ptr<Backend> create_reference(const Model& model, const BackendOptions& options) {
  return reference_backend_entry().create_reference(model, options);
}

}  // namespace lockstep
