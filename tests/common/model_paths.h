// Where tests find the optional SmolLM2-135M-Instruct model: models/ in the checkout, or the
// cache that scripts/get-default-model.sh fills ($LOCKSTEP_MODEL / ~/.cache/lockstep/models).
// Tests that need it skip visibly when neither exists; it is not part of ../shared.
#pragma once

#include <string>

namespace lockstep::test {

std::string smollm2_path();  // empty when absent

// The real Gemma 3 270M (Q4_K_M) that scripts/get-gemma3-270m.sh puts in the model cache (or
// models/ in the checkout); empty when absent. Tests that need it skip visibly without it.
std::string gemma3_270m_path();

}  // namespace lockstep::test
