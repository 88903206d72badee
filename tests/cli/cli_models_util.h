// Model files the CLI tests run the binary on, written once per test process.
#pragma once

#include <string>

namespace lockstep::test {

// The chain model (tests/engine/chain_model_util.h): after BOS it writes kChainText, then </s>.
// 16 tokens, trained context 64, no chat template.
const std::string& chain_model_path();
inline const std::string kChainText = " Once upon a time the end.";

// `lockstep make-model --arch llama --preset tiny --quant QUANT --seed 1`: random weights, so
// greedy generation wanders without reaching end of generation; trained context 2048.
const std::string& tiny_model_path(const std::string& quant = "f32");

}  // namespace lockstep::test
