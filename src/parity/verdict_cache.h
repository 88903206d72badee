// Remembered gate verdicts for deterministic candidates (the fast CPU path). A candidate whose
// results depend only on its inputs, its code and the CPU's instruction set gives the same logits
// on the same probe every time, so a pass, once computed, is a fact about that combination; `run`
// and `chat` then need not pay the comparison again. The key holds everything that decides the
// bits: the model file's identity (size, modification time, a hash of its header and tensor
// table), the lockstep executable's identity (a hash of its bytes), the backend and what its
// registry entry says decides its bits (e.g. the ISA level), the probe's tokens and the gate's
// settings. Results do not depend on the thread count (tested), so threads are not in the key.
// Only passes are kept; GPU verdicts never are (drift on a GPU need not be deterministic).
#pragma once

#include <optional>
#include <span>
#include <string>

#include "model/model.h"
#include "parity/comparison.h"
#include "parity/parity_config.h"

namespace lockstep {

struct VerdictCacheKey {
  std::string text;    // every field, one "name=value" per line (stored and compared whole)
  std::string digest;  // 16 hex digits of a hash of `text`: the cache file's name
};

// `backend_bits` is what the backend's registry entry says decides its results (besides the
// model and the executable); `batched` whether the gate ran batched steps (n_seq > 1).
VerdictCacheKey make_verdict_key(const Model& model, const std::string& backend,
                                 const std::string& backend_bits, std::span<const int32_t> probe,
                                 const ParityConfig& config, bool batched);

// A directory of one small JSON file per key. Unreadable, corrupt or foreign files are ignored
// with one warning line on stderr (and replaced by the next pass); failing to write is a warning
// too: the cache can only save time, never fail a run.
class VerdictCache {
 public:
  explicit VerdictCache(std::string dir) : dir_(std::move(dir)) {}

  // The remembered pass for `key`: a verdict with status Passed and `cached` set, or nothing.
  std::optional<ParityVerdict> lookup(const VerdictCacheKey& key) const;
  // Remembers a verdict if it is a pass.
  void store(const VerdictCacheKey& key, const ParityVerdict& verdict) const;

  std::string file_for(const VerdictCacheKey& key) const;

 private:
  std::string dir_;
};

// 16 hex digits identifying the running executable's bytes (computed once per process).
const std::string& executable_identity();

}  // namespace lockstep
