// `lockstep inspect FILE [--json]`: what a GGUF file holds (architecture, hyperparameters,
// tokenizer, metadata, every tensor) and whether lockstep can run it. The verdict is "ok" or a
// list of problems; the exit code is 0 for "ok" and 2 for problems (or an unreadable file), so
// scripts can gate on it. The JSON form is documented in docs/inspect-json.md.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "engine/model_source.h"
#include "gguf/gguf_reader.h"
#include "model/hparams.h"
#include "model/model.h"
#include "model/weight_check.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/vocab.h"
#include "util/error.h"
#include "util/stdio_files.h"

namespace lockstep::cli {

namespace {

// Insertion-ordered, so the JSON lists fields in the documented order.
using json = nlohmann::ordered_json;

// Metadata as printed on a terminal (JSON output escapes and repairs invalid UTF-8 separately).
std::string printable(const std::string& s, size_t max_len = 120) {
  return lockstep::printable(s, max_len);
}

// The reader's messages start with the file name; inside a report about that file it is noise.
std::string without_path(const std::string& msg, const std::string& path) {
  const std::string prefix = path + ": ";
  return msg.rfind(prefix, 0) == 0 ? msg.substr(prefix.size()) : msg;
}

// A float32 as the shortest decimal that reads back as the same float (1e-05, not
// 9.999999747378752e-06), so that JSON shows what the file says.
double shortest(double value) {
  const float f = float(value);
  for (int precision = 1; precision <= 9; ++precision) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*g", precision, double(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return double(f);
}

json metadata_value(const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::STRING:
      return v.s;
    case ValueType::BOOL:
      return v.u != 0;
    case ValueType::FLOAT32:
      return shortest(v.f);
    case ValueType::FLOAT64:
      return v.f;
    case ValueType::ARRAY:
      return nullptr;  // summarized by elem_type and length
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
      return v.u;
    default:
      return v.i;
  }
}

std::vector<int64_t> significant_dims(std::vector<int64_t> ne, size_t want) {
  while (ne.size() > want && ne.back() == 1) ne.pop_back();
  return ne;
}

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t k = 0; k < ne.size(); ++k) s += (k ? ", " : "") + std::to_string(ne[k]);
  return s + "]";
}

class Inspector {
 public:
  explicit Inspector(const gguf::GgufFile& f) : f_(f) {}

  json report() {
    json r;
    r["file"] = f_.path();
    r["file_size"] = f_.file_size();
    r["gguf_version"] = f_.version();
    r["alignment"] = f_.alignment();
    r["data_offset"] = f_.data_offset();
    r["kind"] = f_.tensors().empty() ? "vocab-only" : "model";
    r["architecture"] = opt_string("general.architecture");
    r["name"] = opt_string("general.name");
    r["file_type"] = opt_int("general.file_type");
    r["hparams"] = hparams();
    r["tokenizer"] = tokenizer();
    r["metadata"] = metadata();
    r["tensors"] = tensors();
    r["tensor_bytes"] = tensor_bytes_;
    validate(r);
    r["verdict"] = problems_.empty() ? "ok" : "problems";
    r["problems"] = problems_;
    r["warnings"] = warnings_;
    return r;
  }

 private:
  void problem(const std::string& p) { problems_.push_back(p); }

  json opt_string(const std::string& key) {
    try {
      if (auto s = f_.get_string(key)) return *s;
    } catch (const InputError& e) {
      problem(without_path(e.what(), f_.path()));
    }
    return nullptr;
  }
  json opt_int(const std::string& key) {
    try {
      if (auto i = f_.get_int(key)) return *i;
    } catch (const InputError& e) {
      problem(without_path(e.what(), f_.path()));
    }
    return nullptr;
  }

  json hparams() {
    auto arch = f_.get_string("general.architecture");
    if (!arch || !is_supported_architecture(*arch) || f_.tensors().empty()) return nullptr;
    try {
      hp_ = read_hparams(f_);
    } catch (const InputError& e) {
      problem(without_path(e.what(), f_.path()));
      return nullptr;
    }
    have_hp_ = true;
    return {{"n_vocab", hp_.n_vocab},
            {"n_embd", hp_.n_embd},
            {"n_layer", hp_.n_layer},
            {"n_head", hp_.n_head},
            {"n_head_kv", hp_.n_head_kv},
            {"head_dim", hp_.head_dim},
            {"n_ff", hp_.n_ff},
            {"n_ctx_train", hp_.n_ctx_train},
            {"rms_eps", shortest(hp_.rms_eps)},
            {"rope_freq_base", shortest(hp_.rope_freq_base)},
            {"rope_freq_scale", shortest(hp_.rope_freq_scale)},
            {"rope_dim", hp_.rope_dim},
            {"rope_type", hp_.rope_type == RopeType::Neox ? "neox" : "normal"},
            {"has_qkv_bias", hp_.has_qkv_bias},
            {"tied_embeddings", hp_.tied_embeddings}};
  }

  json tokenizer() {
    if (!f_.find("tokenizer.ggml.model")) return nullptr;
    json t;
    t["model"] = opt_string("tokenizer.ggml.model");
    t["pre"] = opt_string("tokenizer.ggml.pre");
    const gguf::Value* tokens = f_.find("tokenizer.ggml.tokens");
    t["n_tokens"] = tokens && tokens->type == gguf::ValueType::ARRAY ? json(tokens->array.size())
                                                                     : json(nullptr);
    const gguf::Value* merges = f_.find("tokenizer.ggml.merges");
    t["n_merges"] = merges && merges->type == gguf::ValueType::ARRAY ? json(merges->array.size())
                                                                     : json(nullptr);
    for (const char* id : {"bos", "eos", "eot", "pad", "unk"}) {
      const std::string key = std::string("tokenizer.ggml.") +
                              (std::string(id) == "pad" ? "padding" : id) + "_token_id";
      t[id] = opt_int(key);
    }
    // Special: the token types special-token parsing matches (unknown 2, control 3,
    // user-defined 4), as in the tokenizer.
    int64_t special = 0;
    if (const gguf::Value* types = f_.find("tokenizer.ggml.token_type"))
      for (const auto& v : types->array)
        if (auto ty = v.as_int(); ty && *ty >= 2 && *ty <= 4) ++special;
    t["n_special"] = special;
    json tmpl = opt_string("tokenizer.chat_template");
    if (tmpl.is_null()) {
      t["chat_template"] = "none";
    } else {
      auto ct = tokenizer::ChatTemplate::detect(tmpl.get<std::string>());
      t["chat_template"] = ct.fell_back() ? "unknown" : ct.name();
    }
    // The runtime's own loader is the authority on whether the tokenizer works.
    try {
      vocab_ = std::make_unique<tokenizer::Vocab>(tokenizer::Vocab::from_gguf(f_));
    } catch (const Error& e) {
      problem("tokenizer: " + without_path(e.what(), f_.path()));
    }
    return t;
  }

  json metadata() {
    json m = json::array();
    for (const auto& e : f_.metadata()) {
      json item{{"key", e.key}, {"type", gguf::value_type_name(e.value.type)}};
      if (e.value.type == gguf::ValueType::ARRAY) {
        item["elem_type"] = gguf::value_type_name(e.value.elem_type);
        item["length"] = e.value.array.size();
      } else {
        item["value"] = metadata_value(e.value);
      }
      m.push_back(std::move(item));
    }
    return m;
  }

  json tensors() {
    json list = json::array();
    for (const auto& t : f_.tensors()) {
      list.push_back({{"name", t.name},
                      {"type", tensor_type_name(t.raw_type)},
                      {"shape", t.ne},
                      {"n_elements", t.n_elements},
                      {"bytes", t.n_bytes},
                      {"offset", t.offset},
                      {"file_offset", f_.data_offset() + t.offset}});
      tensor_bytes_ += t.n_bytes;
    }
    return list;
  }

  void validate(const json& r) {
    // A vocab-only file is a tokenizer: its architecture matters only to a model.
    const bool vocab_only = f_.tensors().empty();
    auto arch_issue = [&](const std::string& what) {
      if (vocab_only)
        warnings_.push_back(what);
      else
        problem(what);
    };
    const json& arch = r["architecture"];
    if (arch.is_null()) {
      if (!f_.find("general.architecture"))
        arch_issue("missing metadata key 'general.architecture'");
    } else if (!is_supported_architecture(arch.get<std::string>())) {
      arch_issue("unknown architecture '" + printable(arch.get<std::string>()) +
                 "' (supported: " + supported_architectures() + ")");
    }
    if (vocab_only) {
      if (r["tokenizer"].is_null()) problem("no tensors and no tokenizer");
      return;  // vocab-only: the tokenizer checks above are all there is
    }
    if (r["tokenizer"].is_null()) problem("no tokenizer (tokenizer.ggml.model is missing)");
    if (!have_hp_) return;

    std::vector<bool> expected_name(f_.tensors().size(), false);
    for (const auto& e : expected_tensors(hp_)) {
      const gguf::TensorInfo* ti = f_.find_tensor(e.name);
      if (!ti) {
        if (!e.optional) problem("missing tensor '" + e.name + "'");
        continue;
      }
      expected_name[size_t(ti - f_.tensors().data())] = true;
      if (significant_dims(ti->ne, e.ne.size()) != e.ne)
        problem("tensor '" + e.name + "' has shape " + shape_str(ti->ne) + ", expected " +
                shape_str(e.ne));
      if (!tensor_type_info(ti->type).can_dequantize)
        problem("tensor '" + e.name + "' has type " + tensor_type_name(ti->raw_type) +
                ", which lockstep cannot compute with");
      if (auto bad = find_non_finite(*ti)) problem("tensor '" + e.name + "': " + *bad);
    }
    for (size_t k = 0; k < f_.tensors().size(); ++k)
      if (!expected_name[k])
        warnings_.push_back("unexpected tensor '" + printable(f_.tensors()[k].name) +
                            "' (ignored)");
    if (vocab_) {
      try {
        check_vocab_matches(hp_, *vocab_, f_.path());
      } catch (const Error& e) {
        problem(without_path(e.what(), f_.path()));
      }
    }
    // Model binding is the runtime's authority; anything it refuses that the checks above did
    // not name is reported as it says it.
    if (problems_.empty()) {
      try {
        (void)Model::load(f_.path());
      } catch (const Error& e) {
        problem(without_path(e.what(), f_.path()));
      }
    }
  }

  const gguf::GgufFile& f_;
  HParams hp_;
  bool have_hp_ = false;
  std::unique_ptr<tokenizer::Vocab> vocab_;
  uint64_t tensor_bytes_ = 0;
  std::vector<std::string> problems_;
  std::vector<std::string> warnings_;
};

std::string str_or_dash(const json& j) {
  if (j.is_null()) return "-";
  if (j.is_string()) return printable(j.get<std::string>());
  return j.dump();
}

// general.file_type as llama.cpp's enum names it: "MOSTLY_Q4_K_M (15)", "ALL_F32 (0)".
std::string file_type_str(const json& j) {
  if (!j.is_number_integer()) return str_or_dash(j);
  const int64_t v = j.get<int64_t>();
  const char* name = ftype_name(v);
  std::string s = !name                       ? "unknown"
                  : (v & ~int64_t(1024)) == 0 ? "ALL_F32"
                                              : std::string("MOSTLY_") + name;
  if (name && (v & 1024)) s += ", guessed";
  return s + " (" + std::to_string(v) + ")";
}

// A special token id: "none" when the file has no such token: the key is absent, or holds -1 as
// llama.cpp writes it (as an int32, or as a uint32: 4294967295).
std::string token_id_str(const json& j) {
  if (j.is_null()) return "none";
  if (j.is_number_integer()) {
    const int64_t id = j.get<int64_t>();
    if (id < 0 || id == int64_t(UINT32_MAX)) return "none";
  }
  return str_or_dash(j);
}

std::string human_bytes(uint64_t n) {
  char buf[32];
  if (n >= (uint64_t(1) << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(n) / double(uint64_t(1) << 30));
  else if (n >= (uint64_t(1) << 20))
    std::snprintf(buf, sizeof buf, "%.2f MiB", double(n) / double(uint64_t(1) << 20));
  else
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  return buf;
}

void print_human(const json& r, const gguf::GgufFile& f) {
  std::printf("%s: GGUF v%u, %s, alignment %llu, data at byte %llu, %s\n",
              printable(r["file"].get<std::string>(), 4096).c_str(), f.version(),
              human_bytes(f.file_size()).c_str(), static_cast<unsigned long long>(f.alignment()),
              static_cast<unsigned long long>(f.data_offset()),
              r["kind"].get<std::string>().c_str());
  std::printf("architecture: %s   name: %s   file_type: %s\n",
              str_or_dash(r["architecture"]).c_str(), str_or_dash(r["name"]).c_str(),
              file_type_str(r["file_type"]).c_str());
  if (!r["hparams"].is_null()) {
    std::string line;
    for (const auto& item : r["hparams"].items())
      line += (line.empty() ? "" : ", ") + item.key() + " " + str_or_dash(item.value());
    std::printf("hyperparameters: %s\n", line.c_str());
  }
  if (const json& t = r["tokenizer"]; !t.is_null()) {
    std::printf(
        "tokenizer: %s (pre %s), %s tokens, %s merges, bos %s, eos %s, eot %s, pad %s, %s "
        "special, chat template %s\n",
        str_or_dash(t["model"]).c_str(), str_or_dash(t["pre"]).c_str(),
        str_or_dash(t["n_tokens"]).c_str(), str_or_dash(t["n_merges"]).c_str(),
        token_id_str(t["bos"]).c_str(), token_id_str(t["eos"]).c_str(),
        token_id_str(t["eot"]).c_str(), token_id_str(t["pad"]).c_str(),
        str_or_dash(t["n_special"]).c_str(), str_or_dash(t["chat_template"]).c_str());
  } else {
    std::printf("tokenizer: none\n");
  }
  std::printf("metadata: %zu keys\n", f.metadata().size());
  for (const auto& e : f.metadata())
    std::printf("  %-44s %-6s %s\n", printable(e.key, 80).c_str(),
                gguf::value_type_name(e.value.type), printable(e.value.to_display(4)).c_str());
  std::printf("tensors: %zu, %s of data\n", f.tensors().size(),
              human_bytes(r["tensor_bytes"].get<uint64_t>()).c_str());
  if (!f.tensors().empty())
    std::printf("  %-36s %-7s %-24s %14s %14s\n", "name", "type", "shape", "bytes", "offset");
  for (const auto& t : f.tensors())
    std::printf("  %-36s %-7s %-24s %14llu %14llu\n", printable(t.name, 80).c_str(),
                tensor_type_name(t.raw_type).c_str(), shape_str(t.ne).c_str(),
                static_cast<unsigned long long>(t.n_bytes),
                static_cast<unsigned long long>(f.data_offset() + t.offset));
  for (const auto& w : r["warnings"])
    std::printf("warning: %s\n", printable(w.get<std::string>(), 400).c_str());
  if (r["problems"].empty()) {
    std::printf("verdict: ok\n");
  } else {
    std::printf("verdict: %zu problem%s\n", r["problems"].size(),
                r["problems"].size() == 1 ? "" : "s");
    for (const auto& p : r["problems"])
      std::printf("  - %s\n", printable(p.get<std::string>(), 400).c_str());
  }
}

int inspect(const std::string& path, bool as_json) {
  const gguf::GgufFile f = gguf::GgufFile::open(path);
  const json r = Inspector(f).report();
  if (as_json) {
    // Invalid UTF-8 in a hostile file's strings becomes U+FFFD instead of aborting the dump.
    const std::string text = r.dump(2, ' ', false, json::error_handler_t::replace);
    write_stdout(text + "\n");
  } else {
    print_human(r, f);
  }
  flush_stdout();
  return r["problems"].empty() ? kExitOk : kExitBadInput;
}

}  // namespace

void add_inspect(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "inspect", "Describe a GGUF file and validate it (exit 0: ok, 2: problems or bad file)");
  auto path = std::make_shared<std::string>();
  auto model = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  auto* file_opt = cmd->add_option("file", *path, "GGUF file (the same as -m FILE)");
  auto* model_opt = cmd->add_option(
      "-m,--model", *model,
      "GGUF file (default: $LOCKSTEP_MODEL, else the SmolLM2-135M-Instruct download of "
      "scripts/get-default-model.sh)");
  file_opt->excludes(model_opt);
  cmd->add_flag("--json", *as_json, "Print the report as JSON (docs/inspect-json.md)");
  cmd->callback([&action, path, model, as_json] {
    action = [path, model, as_json] {
      return inspect(resolve_model_path(path->empty() ? *model : *path), *as_json);
    };
  });
}

}  // namespace lockstep::cli
