// Where tests find the optional SmolLM2-135M-Instruct model: models/ in the checkout, or the
// cache that scripts/get-default-model.sh fills ($LOCKSTEP_MODEL / ~/.cache/lockstep/models).
// Tests that need it skip visibly when neither exists; it is not part of ../shared.
#pragma once

#include <string>

namespace lockstep::test {

std::string smollm2_path();  // empty when absent

}  // namespace lockstep::test
