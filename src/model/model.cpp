#include "model/model.h"

#include <cmath>

#include "quant/quantize.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lockstep {

std::vector<ExpectedTensor> expected_tensors(const HParams& hp) {
  const int64_t q_dim = hp.n_head * hp.head_dim;
  const int64_t kv_dim = hp.n_head_kv * hp.head_dim;
  std::vector<ExpectedTensor> t;
  t.push_back({"token_embd.weight", {hp.n_embd, hp.n_vocab}});
  t.push_back({"output_norm.weight", {hp.n_embd}});
  t.push_back({"output.weight", {hp.n_embd, hp.n_vocab}, /*optional=*/true});
  if (hp.has_rope_freqs) t.push_back({"rope_freqs.weight", {hp.rope_dim / 2}});
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    t.push_back({b + "attn_norm.weight", {hp.n_embd}});
    if (hp.fused_qkv) {
      t.push_back({b + "attn_qkv.weight", {hp.n_embd, q_dim + 2 * kv_dim}});
    } else {
      t.push_back({b + "attn_q.weight", {hp.n_embd, q_dim}});
      t.push_back({b + "attn_k.weight", {hp.n_embd, kv_dim}});
      t.push_back({b + "attn_v.weight", {hp.n_embd, kv_dim}});
    }
    t.push_back({b + "attn_output.weight", {q_dim, hp.n_embd}});
    if (hp.has_qkv_bias) {
      t.push_back({b + "attn_q.bias", {q_dim}});
      t.push_back({b + "attn_k.bias", {kv_dim}});
      t.push_back({b + "attn_v.bias", {kv_dim}});
    }
    if (hp.has_qk_norm) {
      t.push_back({b + "attn_q_norm.weight", {hp.head_dim}});
      t.push_back({b + "attn_k_norm.weight", {hp.head_dim}});
    }
    if (hp.has_post_norms) t.push_back({b + "post_attention_norm.weight", {hp.n_embd}});
    t.push_back({b + "ffn_norm.weight", {hp.n_embd}});
    if (hp.fused_gate_up) {
      t.push_back({b + "ffn_up.weight", {hp.n_embd, 2 * hp.n_ff}});
    } else {
      t.push_back({b + "ffn_gate.weight", {hp.n_embd, hp.n_ff}});
      t.push_back({b + "ffn_up.weight", {hp.n_embd, hp.n_ff}});
    }
    t.push_back({b + "ffn_down.weight", {hp.n_ff, hp.n_embd}});
    if (hp.has_post_norms) t.push_back({b + "post_ffw_norm.weight", {hp.n_embd}});
  }
  return t;
}

namespace {

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t k = 0; k < ne.size(); ++k) s += (k ? ", " : "") + std::to_string(ne[k]);
  return s + "]";
}

WeightView bind(const gguf::GgufFile& f, const ExpectedTensor& e) {
  const gguf::TensorInfo* ti = f.find_tensor(e.name);
  if (!ti) {
    if (e.optional) return {};
    throw InputError(f.path() + ": missing tensor '" + e.name + "'");
  }
  // A 1-D expectation also accepts [n, 1]; compare the significant dimensions.
  std::vector<int64_t> ne = ti->ne;
  while (ne.size() > e.ne.size() && ne.back() == 1) ne.pop_back();
  if (ne != e.ne)
    throw InputError(f.path() + ": tensor '" + e.name + "' has shape " + shape_str(ti->ne) +
                     ", expected " + shape_str(e.ne));
  const auto& info = tensor_type_info(ti->type);
  if (!info.can_dequantize)
    throw InputError(f.path() + ": tensor '" + e.name + "' has type " + info.name +
                     ", which lockstep cannot compute with");
  WeightView w;
  w.name = e.name;
  w.type = ti->type;
  w.cols = ti->ne[0];
  w.rows = ti->rows();
  w.row_bytes = *row_bytes(ti->type, ti->ne[0]);
  w.data = ti->data;
  return w;
}

// Rows [first, first + count) of a fused matrix, as a matrix of their own.
WeightView row_range(const WeightView& fused, int64_t first, int64_t count, const char* part) {
  WeightView w = fused;
  w.name = fused.name + "[" + part + "]";
  w.rows = count;
  w.data = fused.row(first);
  return w;
}

}  // namespace

Model Model::load(const std::string& path) {
  return from_file(gguf::GgufFile::open(path));
}

Model Model::from_file(gguf::GgufFile file) {
  Model m;
  m.file = std::make_unique<gguf::GgufFile>(std::move(file));
  const gguf::GgufFile& f = *m.file;
  m.hp = read_hparams(f);
  auto expected = expected_tensors(m.hp);
  size_t k = 0;
  m.tok_embd = bind(f, expected[k++]);
  m.output_norm = bind(f, expected[k++]);
  m.output = bind(f, expected[k++]);
  if (!m.output.present()) m.output = m.tok_embd;
  if (m.hp.has_rope_freqs) m.rope_freqs = bind(f, expected[k++]);
  m.layers.resize(size_t(m.hp.n_layer));
  for (auto& L : m.layers) {
    L.attn_norm = bind(f, expected[k++]);
    if (m.hp.fused_qkv) {
      const WeightView qkv = bind(f, expected[k++]);
      const int64_t q_dim = m.hp.n_head * m.hp.head_dim, kv_dim = m.hp.n_head_kv * m.hp.head_dim;
      L.wq = row_range(qkv, 0, q_dim, "q");
      L.wk = row_range(qkv, q_dim, kv_dim, "k");
      L.wv = row_range(qkv, q_dim + kv_dim, kv_dim, "v");
    } else {
      L.wq = bind(f, expected[k++]);
      L.wk = bind(f, expected[k++]);
      L.wv = bind(f, expected[k++]);
    }
    L.wo = bind(f, expected[k++]);
    if (m.hp.has_qkv_bias) {
      L.bq = bind(f, expected[k++]);
      L.bk = bind(f, expected[k++]);
      L.bv = bind(f, expected[k++]);
    }
    if (m.hp.has_qk_norm) {
      L.q_norm = bind(f, expected[k++]);
      L.k_norm = bind(f, expected[k++]);
    }
    if (m.hp.has_post_norms) L.post_attn_norm = bind(f, expected[k++]);
    L.ffn_norm = bind(f, expected[k++]);
    if (m.hp.fused_gate_up) {
      const WeightView gate_up = bind(f, expected[k++]);
      L.ffn_gate = row_range(gate_up, 0, m.hp.n_ff, "gate");
      L.ffn_up = row_range(gate_up, m.hp.n_ff, m.hp.n_ff, "up");
    } else {
      L.ffn_gate = bind(f, expected[k++]);
      L.ffn_up = bind(f, expected[k++]);
    }
    L.ffn_down = bind(f, expected[k++]);
    if (m.hp.has_post_norms) L.post_ffn_norm = bind(f, expected[k++]);
  }
  return m;
}

std::vector<float> rope_freq_factors(const Model& model) {
  const WeightView& w = model.rope_freqs;
  if (!w.present()) return {};
  std::vector<float> v(size_t(w.cols));
  dequantize_row(w.type, w.data, v.data(), w.cols);
  for (size_t i = 0; i < v.size(); ++i)
    if (!(std::isfinite(v[i]) && v[i] > 0))
      throw InputError(model.file->path() + ": tensor 'rope_freqs.weight' element " +
                       std::to_string(i) + " = " + std::to_string(v[i]) +
                       " (rope frequency factors must be finite and positive)");
  return v;
}

void check_vocab_matches(const HParams& hp, const tokenizer::Vocab& vocab,
                         const std::string& path) {
  if (vocab.n_tokens() != hp.n_vocab)
    throw InputError(path + ": tokenizer has " + std::to_string(vocab.n_tokens()) +
                     " tokens but token_embd.weight has " + std::to_string(hp.n_vocab) + " rows");
}

void check_vocab_matches(const Model& model, const tokenizer::Vocab& vocab) {
  check_vocab_matches(model.hp, vocab, model.file->path());
}

}  // namespace lockstep
