// Non-finite weights: a NaN or an infinity in a weight makes every logit after it garbage, yet the
// file parses and binds. `inspect` scans for them so that its verdict does not say "ok" for such a
// file. The scan is linear and reads the file in place: plain float tensors (F32, F16, BF16)
// value by value, block-quantized tensors by their float scale fields only (a block's quants are
// small integers, finite by construction; only its scales can be NaN or infinite).
#pragma once

#include <optional>
#include <string>

#include "gguf/gguf_reader.h"

namespace lockstep {

// "element 17 is nan" / "block 3 has a non-finite scale (inf)" for the first non-finite value of
// a tensor, or nullopt when all are finite or the type is one lockstep cannot compute with.
std::optional<std::string> find_non_finite(const gguf::TensorInfo& tensor);

}  // namespace lockstep
