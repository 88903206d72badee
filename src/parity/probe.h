// Choosing the probe the gate compares on: the first P tokens of the user's prompt when it is long
// enough (so the prompt is not processed twice on the candidate), else P tokens of a fixed text.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tokenizer/vocab.h"

namespace lockstep {

struct Probe {
  std::vector<int32_t> tokens;
  bool is_prompt = false;  // tokens are the first tokens of the user's prompt
};

// P is clamped so that the probe plus `steps` fits in n_ctx.
Probe make_probe(const tokenizer::Vocab& vocab, std::span<const int32_t> prompt, int positions,
                 int steps, int n_ctx);

}  // namespace lockstep
