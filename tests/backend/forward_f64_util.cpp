#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>

#include "backend/forward_f64.h"
#include "quant/quantize.h"

namespace lockstep::backend_test {

namespace {

std::vector<double> load(const WeightView& w) {
  std::vector<float> row(size_t(w.cols));
  std::vector<double> out;
  out.reserve(size_t(w.cols * w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w.type, w.row(r), row.data(), w.cols);
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

// y = W x for a rows x cols matrix.
std::vector<double> matvec(const std::vector<double>& W, const std::vector<double>& x) {
  const size_t cols = x.size();
  const size_t rows = W.size() / cols;
  std::vector<double> y(rows, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    double s = 0;
    for (size_t c = 0; c < cols; ++c) s += W[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

std::vector<double> rms_normalise(const std::vector<double>& x, const std::vector<double>& g,
                                  double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= double(x.size());
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = g[i] * x[i] / std::sqrt(ms + eps);
  return y;
}

// YaRN's frequency of pair i ("NTK-by-parts" of the YaRN paper): with r(i) the number of turns
// pair i makes over the original context L, r(i) = L / (2 pi base^(2i/d)), a pair with
// r < beta_slow is interpolated (frequency / s), one with r > beta_fast keeps its frequency, and
// gamma blends the two between. The paper's gamma is linear in r; Hugging Face and llama.cpp
// (whose output GGUF models are held to) make it linear in the pair index between the indices,
// rounded outwards to whole pairs, where r crosses beta_fast and beta_slow: so here.
double yarn_frequency(const HParams& hp, int64_t i) {
  const double d = double(hp.rope_dim), base = double(hp.rope_freq_base);
  const double s = 1.0 / double(hp.rope_freq_scale);
  const double L = double(hp.rope_yarn_orig_ctx);
  // r(i) = L / (2 pi base^(2i/d)) solved for i.
  auto index_where_turns = [&](double r) {
    return d / 2 * std::log(L / (2 * std::numbers::pi * r)) / std::log(base);
  };
  const double first = std::max(0.0, std::floor(index_where_turns(hp.rope_yarn_beta_fast)));
  const double last = std::min(d - 1, std::ceil(index_where_turns(hp.rope_yarn_beta_slow)));
  const double gamma =
      last > first ? std::clamp((last - double(i)) / (last - first), 0.0, 1.0) : double(i) < first;
  const double freq = std::pow(base, -2.0 * double(i) / d);
  return gamma * freq + (1 - gamma) * freq / s;
}

// Rotary embedding written as a complex rotation of each pair: Normal pairs neighbours
// (2i, 2i+1), Neox pairs the two halves of the rotated part (i, i + rope_dim/2). YaRN scales the
// rotated pairs by attn_factor * (0.1 ln s + 1).
void rotate(double* head, const HParams& hp, int64_t pos) {
  const int64_t half = hp.rope_dim / 2;
  const double magnitude =
      hp.rope_yarn ? double(hp.rope_attn_factor) * (0.1 * std::log(1.0 / hp.rope_freq_scale) + 1)
                   : 1.0;
  for (int64_t i = 0; i < half; ++i) {
    const double freq =
        1.0 / std::pow(double(hp.rope_freq_base), double(2 * i) / double(hp.rope_dim));
    const double angle = hp.rope_yarn ? double(pos) * yarn_frequency(hp, i)
                                      : double(pos) * double(hp.rope_freq_scale) * freq;
    const int64_t a = hp.rope_type == RopeType::Normal ? 2 * i : i;
    const int64_t b = hp.rope_type == RopeType::Normal ? 2 * i + 1 : i + half;
    const std::complex<double> z =
        std::complex<double>(head[a], head[b]) * std::polar(magnitude, angle);
    head[a] = z.real();
    head[b] = z.imag();
  }
}

}  // namespace

ForwardF64::ForwardF64(const Model& model) : hp_(model.hp) {
  tok_embd_ = load(model.tok_embd);
  output_ = load(model.output);
  output_norm_ = load(model.output_norm);
  for (const LayerWeights& L : model.layers) {
    Layer d;
    d.attn_norm = load(L.attn_norm);
    d.ffn_norm = load(L.ffn_norm);
    if (hp_.has_qkv_bias) {
      d.bq = load(L.bq);
      d.bk = load(L.bk);
      d.bv = load(L.bv);
    }
    d.wq = load(L.wq);
    d.wk = load(L.wk);
    d.wv = load(L.wv);
    d.wo = load(L.wo);
    d.gate = load(L.ffn_gate);
    d.up = load(L.ffn_up);
    d.down = load(L.ffn_down);
    layers_.push_back(std::move(d));
  }
  keys_.resize(layers_.size());
  values_.resize(layers_.size());
  attn_out_.resize(layers_.size());
  ffn_out_.resize(layers_.size());
}

std::vector<double> ForwardF64::step(int32_t token) {
  const int64_t E = hp_.n_embd, hd = hp_.head_dim;
  const int64_t pos = int64_t(keys_[0].size());
  std::vector<double> x(tok_embd_.begin() + token * E, tok_embd_.begin() + (token + 1) * E);

  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    std::vector<double> h = rms_normalise(x, L.attn_norm, hp_.rms_eps);
    std::vector<double> q = matvec(L.wq, h), k = matvec(L.wk, h), v = matvec(L.wv, h);
    if (hp_.has_qkv_bias) {
      for (size_t i = 0; i < q.size(); ++i) q[i] += L.bq[i];
      for (size_t i = 0; i < k.size(); ++i) k[i] += L.bk[i];
      for (size_t i = 0; i < v.size(); ++i) v[i] += L.bv[i];
    }
    for (int64_t head = 0; head < hp_.n_head; ++head) rotate(&q[size_t(head * hd)], hp_, pos);
    for (int64_t head = 0; head < hp_.n_head_kv; ++head) rotate(&k[size_t(head * hd)], hp_, pos);
    keys_[l].push_back(k);
    values_[l].push_back(v);

    std::vector<double> att(size_t(hp_.n_head * hd), 0.0);
    for (int64_t head = 0; head < hp_.n_head; ++head) {
      const int64_t kvh = head * hp_.n_head_kv / hp_.n_head;  // the KV head this query head shares
      std::vector<double> w(size_t(pos + 1));
      for (int64_t j = 0; j <= pos; ++j) {
        double s = 0;
        for (int64_t d = 0; d < hd; ++d)
          s += q[size_t(head * hd + d)] * keys_[l][size_t(j)][size_t(kvh * hd + d)];
        w[size_t(j)] = s / std::sqrt(double(hd));
      }
      double max_w = w[0], total = 0;
      for (double s : w) max_w = std::max(max_w, s);
      for (double& s : w) total += (s = std::exp(s - max_w));
      for (int64_t j = 0; j <= pos; ++j)
        for (int64_t d = 0; d < hd; ++d)
          att[size_t(head * hd + d)] +=
              w[size_t(j)] / total * values_[l][size_t(j)][size_t(kvh * hd + d)];
    }
    std::vector<double> o = matvec(L.wo, att);
    for (int64_t i = 0; i < E; ++i) x[size_t(i)] += o[size_t(i)];
    attn_out_[l] = x;

    h = rms_normalise(x, L.ffn_norm, hp_.rms_eps);
    std::vector<double> g = matvec(L.gate, h), u = matvec(L.up, h);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    std::vector<double> down = matvec(L.down, g);
    for (int64_t i = 0; i < E; ++i) x[size_t(i)] += down[size_t(i)];
    ffn_out_[l] = x;
  }
  return matvec(output_, rms_normalise(x, output_norm_, hp_.rms_eps));
}

}  // namespace lockstep::backend_test
