// "No GPU path may exist that skips the gate", checked three ways:
//  1. at compile time: nobody but the gate (ParityGate, and ParityDiagnostics, which never hands a
//     candidate out) can construct the GateKey that gated factories demand;
//  2. at run time: a gated backend refuses to compute until the gate has let it;
//  3. in the source tree: the factories of gated backends are reached only through the backend
//     registry (whose entries demand the key), and the engine, CLI and server obtain backends
//     only through ParityGate::open.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <type_traits>

#include "backend/gate_key.h"
#include "backend/gated_backend.h"

namespace lockstep {
namespace {

static_assert(!std::is_default_constructible_v<GateKey>, "only ParityGate may construct a GateKey");

class NeverVerified : public GatedBackend {
 public:
  explicit NeverVerified(const Model& m) : model_(m) {}
  std::string name() const override { return "test-gpu"; }
  const Model& model() const override { return model_; }
  int n_past() const override { return 0; }
  int n_ctx() const override { return 16; }
  void truncate(int) override {}
  int calls = 0;

 protected:
  void forward_impl(std::span<const int32_t>, float*, bool) override { ++calls; }
  void drift_kv(int, int64_t, int64_t, float) override {}

 private:
  const Model& model_;
};

TEST(ParityStructure, GatedBackendRefusesToComputeBeforeTheGate) {
  Model m;
  NeverVerified b(m);
  int32_t tok = 1;
  float logit = 0;
  try {
    b.forward({&tok, 1}, &logit, false);
    FAIL() << "an unverified gated backend computed";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitParity);
    EXPECT_NE(std::string(e.what()).find("parity gate"), std::string::npos);
  }
  EXPECT_EQ(b.calls, 0);
  EXPECT_EQ(b.gate_state(), GatedBackend::GateState::Unverified);
}

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

struct SourceFile {
  std::string rel;  // path relative to src/
  std::string text;
};

std::vector<SourceFile> sources() {
  std::vector<SourceFile> out;
  const std::filesystem::path root = "src";
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    auto ext = e.path().extension().string();
    if (ext != ".cpp" && ext != ".h" && ext != ".cu" && ext != ".cuh") continue;
    out.push_back({std::filesystem::relative(e.path(), root).string(), read_all(e.path())});
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

TEST(ParityStructure, OnlyTheGateMakesKeysAndGatedBackends) {
  auto files = sources();
  ASSERT_GT(files.size(), 20u) << "run from the repository root";
  bool saw_gate = false;
  const std::regex key_construction(R"(GateKey\s*(\{\s*\}|\(\s*\)))");
  const std::regex gated_factory(R"(\b(create_cuda_backend|make_fast_cpu_backend)\s*\()");
  for (const auto& f : files) {
    // The gate's own member functions live in these two files.
    if (f.rel == "parity/gate.cpp" || f.rel == "parity/diagnostics.cpp") {
      saw_gate = true;
      continue;
    }
    if (f.rel == "backend/gate_key.h") continue;  // the key's own (private) constructor
    EXPECT_FALSE(std::regex_search(f.text, key_construction))
        << "src/" << f.rel << " constructs a GateKey: only the gate (src/parity/gate.cpp, "
        << "src/parity/diagnostics.cpp) may";
    // A factory's own declaration and definition live in its backend folder; the registry names
    // them in entries that take the key.
    const bool own_folder = starts_with(f.rel, "backend/cuda/") ||
                            starts_with(f.rel, "backend/cpu/") || f.rel == "backend/registry.cpp";
    if (!own_folder) {
      EXPECT_FALSE(std::regex_search(f.text, gated_factory))
          << "src/" << f.rel << " calls a gated backend factory: only the parity gate may";
    }
  }
  EXPECT_TRUE(saw_gate);
}

TEST(ParityStructure, EngineCliAndServerObtainBackendsOnlyThroughTheGate) {
  const std::regex any_factory(
      R"(\b(create_cuda_backend|make_fast_cpu_backend|make_reference_backend)\s*\(|ReferenceBackend\s*[\({]|#include\s*"backend/cuda/)");
  for (const auto& f : sources()) {
    if (!(starts_with(f.rel, "engine/") || starts_with(f.rel, "cli/") ||
          starts_with(f.rel, "server/")))
      continue;
    EXPECT_FALSE(std::regex_search(f.text, any_factory))
        << "src/" << f.rel << " creates a backend directly; use ParityGate::open";
  }
}

// One registry names the backends: outside src/backend/ no code spells a backend's name as a
// string literal, so adding a backend touches the registry and its own folder only.
TEST(ParityStructure, BackendNamesLiveInTheRegistryAlone) {
  const std::regex name_literal(R"re("(cpu-ref|cpu|cuda)")re");
  for (const auto& f : sources()) {
    if (starts_with(f.rel, "backend/")) continue;
    std::smatch m;
    EXPECT_FALSE(std::regex_search(f.text, m, name_literal))
        << "src/" << f.rel << " spells the backend name " << m.str(0)
        << "; read it from the registry (backend/registry.h)";
  }
}

// Knobs are parsed once at the entry point: below the CLI nothing reads the environment (the
// default model's location, engine/model_source.cpp, is an entry-point concern of its own).
TEST(ParityStructure, OnlyTheEntryPointReadsTheEnvironment) {
  const std::regex getenv_call(R"(\bgetenv\s*\()");
  for (const auto& f : sources()) {
    if (starts_with(f.rel, "cli/") || f.rel == "engine/model_source.cpp") continue;
    EXPECT_FALSE(std::regex_search(f.text, getenv_call))
        << "src/" << f.rel << " reads the environment; parse the knob in src/cli/environment.cpp "
        << "into typed options (backend/backend_options.h)";
  }
}

}  // namespace
}  // namespace lockstep
