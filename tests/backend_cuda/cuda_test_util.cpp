#include "backend_cuda/cuda_test_util.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "quant/fp16.h"
#include "quant/quantize.h"

namespace lockstep::cuda_test {

std::string shared_path(const std::string& rel) {
  const char* env = std::getenv("LOCKSTEP_SHARED_DIR");
  const std::string path = (env && *env ? std::string(env) : std::string("../shared")) + "/" + rel;
  std::ifstream probe(path);
  if (!probe) ADD_FAILURE() << "shared data file missing: " << path;
  return path;
}

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& f) {
  const int64_t threads =
      std::max<int64_t>(1, std::min<int64_t>(n, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(f, b, e);
  }
  for (auto& th : pool) th.join();
}

std::vector<float> random_normal(std::mt19937_64& rng, size_t n, float sigma) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

namespace {

// Byte offsets of the fp16 scale fields in one block, and the largest |quant * scale factor| a
// block can reach, so random scales give values of about the requested size.
struct ScaleFields {
  std::vector<int> offsets;
  float q_range;
};

ScaleFields scale_fields(TensorType t) {
  switch (t) {
    case TensorType::Q4_0:
      return {{0}, 8};
    case TensorType::Q4_1:
      return {{0, 2}, 15};
    case TensorType::Q5_0:
      return {{0}, 16};
    case TensorType::Q5_1:
      return {{0, 2}, 31};
    case TensorType::Q8_0:
      return {{0}, 127};
    case TensorType::Q2_K:
      return {{80, 82}, 45};
    case TensorType::Q3_K:
      return {{108}, 128};
    case TensorType::Q4_K:
      return {{0, 2}, 945};
    case TensorType::Q5_K:
      return {{0, 2}, 1953};
    case TensorType::Q6_K:
      return {{208}, 4064};
    default:
      return {{}, 1};
  }
}

}  // namespace

namespace {
uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

std::vector<uint8_t> random_weights(std::mt19937_64& rng, TensorType type, int64_t rows,
                                    int64_t cols, float sigma, bool quantize_even_rows) {
  const auto& info = tensor_type_info(type);
  const uint64_t rb = *row_bytes(type, cols);
  std::vector<uint8_t> out(rb * uint64_t(rows));
  const uint64_t base_seed = rng();
  const bool plain = type == TensorType::F32 || type == TensorType::F16 || type == TensorType::BF16;
  const ScaleFields sf = scale_fields(type);
  parallel_for(rows, [&](int64_t begin, int64_t end) {
    std::vector<float> v(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      uint64_t state = base_seed ^ (uint64_t(r) * 0xd1b54a32d192ed03ull);
      uint8_t* dst = out.data() + uint64_t(r) * rb;
      if (plain || (quantize_even_rows && info.can_quantize && r % 2 == 0)) {
        std::mt19937_64 row_rng(splitmix(state));
        std::normal_distribution<float> nd(0.0f, sigma);
        for (auto& x : v) x = nd(row_rng);
        quantize_row(type, v.data(), dst, cols);
        continue;
      }
      for (uint64_t i = 0; i < rb; i += 8) {
        const uint64_t bits = splitmix(state);
        std::memcpy(dst + i, &bits, std::min<uint64_t>(8, rb - i));
      }
      for (int64_t b = 0; b < cols / info.block_elems; ++b)
        for (int off : sf.offsets) {
          const uint64_t bits = splitmix(state);
          const float mag = 0.5f + 0.5f * float(bits >> 40) / float(1 << 24);
          const float d = (bits & 1 ? -1.0f : 1.0f) * mag * 2.0f * sigma / sf.q_range;
          const uint16_t h = fp32_to_fp16(d);
          std::memcpy(dst + b * info.block_bytes + off, &h, 2);
        }
    }
  });
  return out;
}

std::vector<double> reference_matvec(TensorType type, const uint8_t* w, int64_t rows, int64_t cols,
                                     const float* x, std::vector<double>* abs_sum) {
  const uint64_t rb = *row_bytes(type, cols);
  std::vector<double> y(size_t(rows), 0.0);
  if (abs_sum) abs_sum->assign(size_t(rows), 0.0);
  parallel_for(rows, [&](int64_t b, int64_t e) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = b; r < e; ++r) {
      dequantize_row(type, w + uint64_t(r) * rb, row.data(), cols);
      double s = 0, a = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double p = double(row[size_t(c)]) * double(x[c]);
        s += p;
        a += std::fabs(p);
      }
      y[size_t(r)] = s;
      if (abs_sum) (*abs_sum)[size_t(r)] = a;
    }
  });
  return y;
}

double dot_error_ratio(const std::vector<float>& got, const std::vector<double>& want,
                       const std::vector<double>& abs_sum) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += abs_sum[i] * abs_sum[i];
  }
  return den > 0 ? std::sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
}

std::vector<double> int8_input_bound(TensorType type, const uint8_t* w, int64_t rows, int64_t cols,
                                     const float* x) {
  std::vector<double> half_dx(static_cast<size_t>(cols / 32));  // the per-element bound
  for (size_t g = 0; g < half_dx.size(); ++g) {
    double amax = 0;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double(x[32 * g + i])));
    half_dx[g] = amax / 127.0 * (1.0 / 508.0 + 3e-5);
  }
  const uint64_t rb = *row_bytes(type, cols);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<double> bound(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(type, w + uint64_t(r) * rb, row.data(), cols);
    double b = 0;
    for (size_t i = 0; i < row.size(); ++i) b += std::fabs(double(row[i])) * half_dx[i / 32];
    bound[size_t(r)] = b;
  }
  return bound;
}

double excess_error_ratio(const std::vector<float>& got, const std::vector<double>& want,
                          const std::vector<double>& abs_sum, const std::vector<double>& bound) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double e = std::max(0.0, std::fabs(double(got[i]) - want[i]) - bound[i]);
    num += e * e;
    den += abs_sum[i] * abs_sum[i];
  }
  return den > 0 ? std::sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
}

std::string ErrorStats::describe() const {
  std::ostringstream s;
  s << "nmse " << nmse << ", max |err| " << max_abs << (all_finite ? "" : ", NON-FINITE values");
  return s.str();
}

namespace {
template <typename W>
ErrorStats compare_impl(const float* got, const W* want, size_t n) {
  ErrorStats st;
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(double(want[i]))) {
      st.all_finite = false;
      continue;
    }
    const double e = double(got[i]) - double(want[i]);
    num += e * e;
    den += double(want[i]) * double(want[i]);
    st.max_abs = std::max(st.max_abs, std::fabs(e));
  }
  st.nmse = den > 0 ? num / den : (num > 0 ? INFINITY : 0.0);
  if (!st.all_finite) st.nmse = INFINITY;
  return st;
}
}  // namespace

ErrorStats compare(const float* got, const double* want, size_t n) {
  return compare_impl(got, want, n);
}
ErrorStats compare(const float* got, const float* want, size_t n) {
  return compare_impl(got, want, n);
}

Model make_tiny_model(const TinyModelSpec& s) {
  std::mt19937_64 rng(s.seed);
  gguf::GgufWriter w;
  const std::string a = s.arch == Arch::Qwen2 ? "qwen2" : "llama";
  w.set("general.architecture", gguf::Value::of_string(a));
  w.set("general.name", gguf::Value::of_string("cuda test tiny"));
  w.set(a + ".context_length", gguf::Value::of_u32(uint32_t(s.n_ctx_train)));
  w.set(a + ".embedding_length", gguf::Value::of_u32(uint32_t(s.n_embd)));
  w.set(a + ".block_count", gguf::Value::of_u32(uint32_t(s.n_layer)));
  w.set(a + ".feed_forward_length", gguf::Value::of_u32(uint32_t(s.n_ff)));
  w.set(a + ".attention.head_count", gguf::Value::of_u32(uint32_t(s.n_head)));
  w.set(a + ".attention.head_count_kv", gguf::Value::of_u32(uint32_t(s.n_head_kv)));
  w.set(a + ".attention.layer_norm_rms_epsilon", gguf::Value::of_f32(1e-6f));
  w.set(a + ".rope.freq_base", gguf::Value::of_f32(s.arch == Arch::Qwen2 ? 1000000.0f : 10000.0f));

  HParams hp;
  hp.arch = s.arch;
  hp.n_embd = s.n_embd, hp.n_layer = s.n_layer, hp.n_ff = s.n_ff, hp.n_head = s.n_head;
  hp.n_head_kv = s.n_head_kv, hp.head_dim = s.n_embd / s.n_head, hp.n_vocab = s.n_vocab;
  hp.has_qkv_bias = s.arch == Arch::Qwen2;
  for (const auto& e : expected_tensors(hp)) {
    if (e.name == "output.weight" && s.tied_embeddings) continue;
    TensorType t = s.matrix_type;
    float sigma = e.ne.size() == 2 ? 1.0f / std::sqrt(float(e.ne[0])) : 0.1f;
    if (e.name == "token_embd.weight") t = s.embd_type, sigma = 1.0f;
    if (e.name.find("ffn_down") != std::string::npos) t = s.down_type;
    std::vector<uint8_t> bytes;
    if (e.ne.size() == 1) {
      t = TensorType::F32;
      std::vector<float> v = random_normal(rng, size_t(e.ne[0]), sigma);
      if (e.name.find("norm") != std::string::npos)
        for (auto& x : v) x += 1.0f;
      bytes.resize(v.size() * 4);
      std::memcpy(bytes.data(), v.data(), bytes.size());
    } else {
      // Whole rows quantized from normal values (no random-byte rows): a model that behaves.
      const int64_t rows = e.ne[1], cols = e.ne[0];
      const uint64_t rb = *row_bytes(t, cols);
      bytes.resize(rb * uint64_t(rows));
      if (tensor_type_info(t).can_quantize) {
        for (int64_t r = 0; r < rows; ++r) {
          const std::vector<float> v = random_normal(rng, size_t(cols), sigma);
          quantize_row(t, v.data(), bytes.data() + uint64_t(r) * rb, cols);
        }
      } else {
        bytes = random_weights(rng, t, rows, cols, sigma);
      }
    }
    w.add_tensor(e.name, t, e.ne, std::move(bytes));
  }
  return Model::from_file(gguf::GgufFile::from_bytes(w.to_bytes(), "tiny-" + a + ".gguf"));
}

std::vector<GreedyCase> load_greedy_reference(const std::string& path) {
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in);
  std::vector<GreedyCase> out;
  for (const auto& r : j.at("results"))
    out.push_back({r.at("prompt_ids").get<std::vector<int32_t>>(),
                   r.at("generated_ids").get<std::vector<int32_t>>()});
  return out;
}

LogitsReference load_logits_reference(const std::string& path) {
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in);
  LogitsReference out;
  out.tokens = j.at("tokens").get<std::vector<int32_t>>();
  for (const auto& row : j.at("logits")) out.logits.push_back(row.get<std::vector<float>>());
  return out;
}

double cosine(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  const double c = ab / std::sqrt(aa * bb);
  return std::isfinite(c) ? c : -2.0;  // NaN never passes a >= bound
}

int argmax(const float* v, size_t n) {
  return int(std::max_element(v, v + n) - v);
}

}  // namespace lockstep::cuda_test
