#include "parity/probe.h"

#include <algorithm>

#include "parity/gate.h"
#include "util/error.h"

namespace lockstep {

Probe make_probe(const tokenizer::Vocab& vocab, std::span<const int32_t> prompt, int positions,
                 int steps, int n_ctx) {
  const int P = std::min(positions, n_ctx - steps - 1);
  if (P < 1)
    throw InputError("a context of " + std::to_string(n_ctx) +
                     " tokens is too small for the parity gate's " + std::to_string(steps) +
                     " steps; raise -c or use --backend cpu-ref");
  Probe probe;
  if (int(prompt.size()) >= P) {
    probe.tokens.assign(prompt.begin(), prompt.begin() + P);
    probe.is_prompt = true;
    return probe;
  }
  // The built-in text, continued with itself until it yields P tokens. Only the first copy gets
  // BOS, as a real document would.
  probe.tokens =
      vocab.tokenize(builtin_probe_text(), /*add_special=*/true, /*parse_special=*/false);
  const auto more = vocab.tokenize(" " + builtin_probe_text(), false, false);
  if (more.empty()) throw InputError("the vocabulary cannot tokenize the parity probe text");
  while (int(probe.tokens.size()) < P)
    probe.tokens.insert(probe.tokens.end(), more.begin(), more.end());
  probe.tokens.resize(size_t(P));
  return probe;
}

}  // namespace lockstep
