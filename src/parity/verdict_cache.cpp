#include "parity/verdict_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/hash.h"
#include "util/stderr_line.h"

namespace lockstep {

namespace {

constexpr const char* kFormat = "lockstep-verdict-cache-v1";

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

void warn(const std::string& what) {
  stderr_line("[lockstep] verdict cache: %s\n", one_line(what).c_str());
}

}  // namespace

const std::string& executable_identity() {
  static const std::string id = [] {
    std::ifstream in("/proc/self/exe", std::ios::binary);
    std::vector<char> buf(size_t(1) << 20);
    uint64_t h = 0, total = 0;
    while (in) {
      in.read(buf.data(), std::streamsize(buf.size()));
      const auto got = uint64_t(in.gcount());
      if (got == 0) break;
      h = hash_bytes(buf.data(), got, h ^ total);
      total += got;
    }
    // Without /proc the identity cannot be known: a value no file holds, so nothing ever hits.
    if (total == 0) return std::string("unknown-") + hex16(uint64_t(getpid()));
    return hex16(hash_bytes(&h, sizeof h, total));
  }();
  return id;
}

VerdictCacheKey make_verdict_key(const Model& model, const std::string& backend,
                                 const std::string& backend_bits, std::span<const int32_t> probe,
                                 const ParityConfig& config, bool batched) {
  const gguf::GgufFile& file = *model.file;
  struct stat st {};
  const bool have_stat = ::stat(file.path().c_str(), &st) == 0;
  const int64_t mtime_ns =
      have_stat ? int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec : -1;
  // The header and tensor table: metadata, names, types, shapes and offsets of every tensor.
  const uint64_t table_bytes = std::min<uint64_t>(file.data_offset(), file.file_size());
  const uint64_t table_hash = hash_bytes(file.bytes(), table_bytes);

  std::ostringstream t;
  t.precision(17);
  t << "format=" << kFormat << "\n"
    << "executable=" << executable_identity() << "\n"
    << "model_size=" << file.file_size() << "\n"
    << "model_mtime_ns=" << mtime_ns << "\n"
    << "model_table=" << hex16(table_hash) << "\n"
    << "backend=" << backend << "\n"
    << "backend_bits=" << backend_bits << "\n"
    << "probe=" << probe.size() << ":" << hex16(hash_bytes(probe.data(), probe.size_bytes()))
    << "\n"
    << "steps=" << config.steps << "\n"
    << "cosine_min=" << config.cosine_min << "\n"
    << "kl_max=" << config.kl_max << "\n"
    << "top1_margin=" << config.top1_margin << "\n"
    << "batched=" << (batched ? 1 : 0) << "\n";
  VerdictCacheKey key;
  key.text = t.str();
  key.digest = hex16(hash_bytes(key.text.data(), key.text.size()));
  return key;
}

std::string VerdictCache::file_for(const VerdictCacheKey& key) const {
  return dir_ + "/" + key.digest + ".json";
}

std::optional<ParityVerdict> VerdictCache::lookup(const VerdictCacheKey& key) const {
  const std::string path = file_for(key);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  std::stringstream body;
  body << in.rdbuf();
  if (!in) {
    warn("cannot read " + path + "; ignoring it");
    return std::nullopt;
  }
  const auto j = nlohmann::json::parse(body.str(), nullptr, /*allow_exceptions=*/false);
  try {
    if (j.is_discarded() || !j.is_object() || j.value("format", "") != kFormat)
      throw std::runtime_error("not a verdict cache file");
    if (j.at("key").get<std::string>() != key.text)
      throw std::runtime_error("it belongs to another model, build or probe");
    if (j.at("status").get<std::string>() != "passed")
      throw std::runtime_error("it does not hold a pass");
    ParityVerdict v;
    v.status = ParityVerdict::Status::Passed;
    v.cached = true;
    v.candidate = j.at("candidate").get<std::string>();
    v.positions = j.at("positions").get<int>();
    v.steps = j.at("steps").get<int>();
    v.worst_cosine = j.at("worst_cosine").get<double>();
    v.worst_kl = j.at("worst_kl").get<double>();
    v.worst_max_abs = j.at("worst_max_abs").get<double>();
    v.worst_cosine_at = j.at("worst_cosine_at").get<std::string>();
    v.cached_ms = j.at("ms").get<double>();
    if (!(v.worst_cosine >= 0 && v.worst_cosine <= 1.0000001) || !(v.worst_kl >= 0))
      throw std::runtime_error("its metrics are out of range");
    return v;
  } catch (const std::exception& e) {
    warn(path + ": " + e.what() + "; ignoring it");
    return std::nullopt;
  }
}

void VerdictCache::store(const VerdictCacheKey& key, const ParityVerdict& v) const {
  if (v.status != ParityVerdict::Status::Passed || v.cached) return;
  nlohmann::ordered_json j;
  j["format"] = kFormat;
  j["key"] = key.text;
  j["status"] = "passed";
  j["candidate"] = v.candidate;
  j["positions"] = v.positions;
  j["steps"] = v.steps;
  j["worst_cosine"] = v.worst_cosine;
  j["worst_kl"] = v.worst_kl;
  j["worst_max_abs"] = v.worst_max_abs;
  j["worst_cosine_at"] = v.worst_cosine_at;
  j["ms"] = v.ms;
  const std::string path = file_for(key);
  // Written beside its final name and renamed over it, so that a reader never sees half a file.
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << j.dump(1) << "\n";
    if (!out) {
      warn("cannot write " + tmp + " (the verdict is not remembered)");
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    warn("cannot rename " + tmp + " to " + path + ": " + ec.message());
    std::filesystem::remove(tmp, ec);
  }
}

}  // namespace lockstep
