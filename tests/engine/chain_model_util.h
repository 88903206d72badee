// A tiny llama model built in memory whose greedy output is known in advance: token t is always
// followed by next[t]. The embedding is one-hot, the output matrix puts a large weight on next[t]
// for input t, and the single transformer layer has small random weights, so the backend does
// real attention and FFN work without being able to change the argmax.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "tokenizer/vocab.h"

namespace lockstep::test {

// SPM vocabulary of the chain model, by id.
enum ChainToken : int32_t {
  kUnk = 0,
  kBos = 1,
  kEos = 2,
  kOnce = 3,   // "▁Once"
  kUpon = 4,   // "▁upon"
  kA = 5,      // "▁a"
  kTime = 6,   // "▁time"
  kThe = 7,    // "▁the"
  kEnd = 8,    // "▁end"
  kDot = 9,    // "."
  kCaf = 10,   // "▁caf"
  kC3 = 11,    // byte <0xC3>
  kA9 = 12,    // byte <0xA9>  (C3 A9 = "é")
  kLoop = 13,  // "▁la", followed by itself forever
  kNVocab = 16,
};

struct ChainModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Vocab> vocab;
};

// The default chain: <s> Once upon a time the end . </s>;  caf <C3> <A9> </s>;  la la la ...
std::map<int32_t, int32_t> default_chain();
// The GGUF image (for tests that need a file), and the model loaded from it.
std::vector<uint8_t> chain_model_bytes(const std::map<int32_t, int32_t>& next = default_chain());
ChainModel make_chain_model(const std::map<int32_t, int32_t>& next = default_chain());

}  // namespace lockstep::test
