// libFuzzer target for the GGUF reader: any byte string must either parse or raise a
// lockstep::Error; nothing else (crash, sanitizer report, other exception, hang) is allowed.
// A parsed file is then walked completely so that ASan sees every byte the reader claims valid,
// and handed to what every command does next: read_hparams, the model binding, the tokenizer.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "gguf/gguf_reader.h"
#include "model/hparams.h"
#include "model/model.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace {

// Reads every element of a value (recursively) so that bad bookkeeping surfaces as a report.
uint64_t walk(const lockstep::gguf::Value& v) {
  uint64_t h = uint64_t(v.type) + v.u + uint64_t(v.i) + v.s.size();
  for (char c : v.s) h = h * 31 + uint8_t(c);
  for (const auto& e : v.array) h = h * 7 + walk(e);
  h += v.to_display().size();
  if (auto x = v.as_int()) h += uint64_t(*x);
  if (auto x = v.as_strings()) h += x->size();
  if (auto x = v.as_floats()) h += x->size();
  if (auto x = v.as_ints()) h += x->size();
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = lockstep::gguf::GgufFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz");
    volatile uint64_t sink = 0;
    for (const auto& e : f.metadata()) {
      sink = sink + walk(e.value) + e.key.size();
      if (f.find(e.key) != &e.value) __builtin_trap();  // the index must agree with the list
      // Typed getters either answer or raise an InputError; both are fine.
      try {
        (void)f.get_string(e.key);
      } catch (const lockstep::Error&) {
      }
      try {
        (void)f.get_int(e.key);
      } catch (const lockstep::Error&) {
      }
    }
    for (const auto& t : f.tensors()) {
      if (f.find_tensor(t.name) != &t) __builtin_trap();
      // The reader's promise: the data lies inside the file, after the header.
      if (f.data_offset() + t.offset + t.n_bytes > f.file_size()) __builtin_trap();
      if (t.n_elements == 0 || t.ne.empty() || t.ne.size() > 4) __builtin_trap();
      uint64_t sum = 0;
      for (uint64_t k = 0; k < t.n_bytes; ++k) sum += t.data[k];
      sink = sink + sum + uint64_t(t.rows());
    }
    (void)sink;
    try {
      const auto vocab = lockstep::tokenizer::Vocab::from_gguf(f);
      const auto ids = vocab.tokenize("Hello world <|im_start|> 12 \xc3\xa9", true, true);
      (void)vocab.detokenize(ids, true);
    } catch (const lockstep::Error&) {
    }
    try {
      (void)lockstep::read_hparams(f);
      (void)lockstep::Model::from_file(std::move(f));
    } catch (const lockstep::Error&) {
    }
  } catch (const lockstep::Error& e) {
    // Expected for malformed input; the message must stay one line whatever the names hold.
    if (std::strchr(e.what(), '\n')) __builtin_trap();
  }
  return 0;
}
