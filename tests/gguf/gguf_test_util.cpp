#include "gguf/gguf_test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lockstep::gguf_test {

namespace {

Bytes header_and_infos(const RawImage& im, std::vector<uint64_t>* kv_at,
                       std::vector<uint64_t>* tensor_at) {
  Bytes b;
  b.u32(im.magic).u32(im.version);
  b.u64(im.n_tensors_override != UINT64_MAX ? im.n_tensors_override : im.tensors.size());
  b.u64(im.n_kv_override != UINT64_MAX ? im.n_kv_override : im.kv.size());
  for (const auto& e : im.kv) {
    if (kv_at) kv_at->push_back(b.size());
    b.str(e.key).u32(e.type).raw(e.value.bytes());
  }
  for (const auto& t : im.tensors) {
    if (tensor_at) tensor_at->push_back(b.size());
    b.str(t.name);
    b.u32(t.n_dims_override != 0xffffffffu ? t.n_dims_override : uint32_t(t.dims.size()));
    for (uint64_t d : t.dims) b.u64(d);
    b.u32(t.type).u64(t.offset);
  }
  return b;
}

}  // namespace

std::vector<uint8_t> RawImage::build() const {
  Bytes b = header_and_infos(*this, nullptr, nullptr);
  b.pad_to(alignment);
  b.raw(data);
  return b.bytes();
}

uint64_t RawImage::kv_offset(size_t k) const {
  std::vector<uint64_t> at;
  header_and_infos(*this, &at, nullptr);
  return at.at(k);
}

uint64_t RawImage::tensor_info_offset(size_t t) const {
  std::vector<uint64_t> at;
  header_and_infos(*this, nullptr, &at);
  return at.at(t);
}

RawKv kv_u32(const std::string& key, uint32_t v) {
  RawKv e{key, 4, {}};
  e.value.u32(v);
  return e;
}

RawKv kv_string(const std::string& key, const std::string& v) {
  RawKv e{key, 8, {}};
  e.value.str(v);
  return e;
}

RawImage small_valid_image() {
  RawImage im;
  im.kv.push_back(kv_string("general.architecture", "llama"));
  im.kv.push_back(kv_u32("llama.block_count", 1));
  RawKv arr{"tokenizer.ggml.tokens", 9, {}};
  arr.value.u32(8).u64(2).str("a").str("bc");
  im.kv.push_back(arr);
  // Tensor "a": 4x2 F32 = 32 bytes at 0; tensor "b": 8 F32 = 32 bytes at 32. No trailing padding.
  im.tensors.push_back({"a", {4, 2}, 0, 0});
  im.tensors.push_back({"b", {8}, 0, 32});
  for (int k = 0; k < 64; ++k) im.data.push_back(uint8_t(k * 7 + 1));
  return im;
}

std::string temp_path(const std::string& stem) {
  static std::atomic<int> counter{0};
  return (std::filesystem::temp_directory_path() / ("lockstep-gguf-" + std::to_string(getpid()) +
                                                    "-" + std::to_string(counter++) + "-" + stem))
      .string();
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

CliResult run_cli(const std::string& args) {
  const std::string out = temp_path("stdout"), err = temp_path("stderr");
  const std::string cmd = std::string(LOCKSTEP_BINARY) + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  };
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace lockstep::gguf_test
