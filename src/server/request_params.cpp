#include "server/request_params.h"

#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "server/api_error.h"
#include "server/server_context.h"

namespace lockstep::server {

namespace {

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
constexpr size_t kMaxStops = 16;
constexpr size_t kMaxStopBytes = 256;

const char* type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

ApiError wrong_type(const std::string& key, const char* expected, const json& v) {
  return bad_request("'" + key + "' must be " + expected + ", got " + type_name(v), key,
                     "invalid_type");
}

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

uint64_t random_seed() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

std::vector<std::string> parse_stop(const json& v, const std::string& key) {
  std::vector<std::string> stops;
  if (v.is_string()) {
    stops.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > kMaxStops)
      throw bad_request("'" + key + "' holds " + std::to_string(v.size()) + " strings; at most " +
                            std::to_string(kMaxStops) + " are allowed",
                        key);
    for (const auto& s : v) {
      if (!s.is_string()) throw wrong_type(key, "a string or an array of strings", v);
      stops.push_back(s.get<std::string>());
    }
  } else {
    throw wrong_type(key, "a string or an array of strings", v);
  }
  for (const auto& s : stops) {
    if (s.empty()) throw bad_request("'" + key + "' holds an empty string", key);
    if (s.size() > kMaxStopBytes)
      throw bad_request(
          "'" + key + "' holds a string over " + std::to_string(kMaxStopBytes) + " bytes", key);
  }
  return stops;
}

// A field accepted only at its neutral value (what lockstep does anyway).
void require_neutral(const json& body, const char* key, const std::function<bool(const json&)>& ok,
                     const std::string& why) {
  const json* v = field(body, key);
  if (v && !ok(*v)) throw unsupported(key, why);
}

void check_sampling(const SamplingParams& p) {
  if (std::string err = validate(p); !err.empty()) throw bad_request(err);
}

}  // namespace

json parse_body(const std::string& body) {
  if (body.empty())
    throw bad_request("the request body is empty (expected a JSON object)", "", "invalid_json");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    const std::string what = e.what();
    if (what.find("UTF-8") != std::string::npos)
      throw bad_request("the request body is not valid UTF-8 (byte " + std::to_string(e.byte) + ")",
                        "", "invalid_utf8");
    // Keep the message ASCII: the library quotes the bytes it read last.
    const auto last = what.find("; last read");
    throw bad_request("the request body is not valid JSON: " + what.substr(0, last), "",
                      "invalid_json");
  }
  if (!j.is_object())
    throw bad_request(std::string("the request body must be a JSON object, got ") + type_name(j),
                      "", "invalid_json");
  return j;
}

void check_known_keys(const json& obj, const std::vector<std::string_view>& known,
                      const std::string& where) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool found = false;
    for (std::string_view k : known) found = found || it.key() == k;
    if (!found) throw unsupported(where + it.key(), "unknown parameter");
  }
}

std::optional<std::string> get_string(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

std::optional<bool> get_bool(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

std::optional<double> get_number(const json& obj, const char* key, double lo, double hi) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw wrong_type(key, "a number", *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad_request(
        "'" + std::string(key) + "' must be in [" + fmt(lo) + ", " + fmt(hi) + "], got " + fmt(x),
        key);
  return x;
}

std::optional<int64_t> get_integer(const json& obj, const char* key, int64_t lo, int64_t hi) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  const auto out_of_range = [&](const std::string& got) {
    return bad_request("'" + std::string(key) + "' must be an integer in [" + std::to_string(lo) +
                           ", " + std::to_string(hi) + "], got " + got,
                       key);
  };
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > uint64_t(hi)) throw out_of_range(std::to_string(u));
    return int64_t(u);
  }
  if (v->is_number_integer()) {
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) throw out_of_range(std::to_string(x));
    return x;
  }
  if (v->is_number_float()) {
    const double x = v->get<double>();
    if (!(std::isfinite(x) && x == std::floor(x))) throw wrong_type(key, "an integer", *v);
    if (x < double(lo) || x > double(hi)) throw out_of_range(fmt(x));
    return int64_t(x);
  }
  throw wrong_type(key, "an integer", *v);
}

std::vector<std::string_view> openai_generation_keys(std::vector<std::string_view> extra) {
  extra.insert(extra.end(), {"model",
                             "stream",
                             "stream_options",
                             "max_tokens",
                             "max_completion_tokens",
                             "temperature",
                             "top_p",
                             "top_k",
                             "min_p",
                             "repeat_penalty",
                             "seed",
                             "stop",
                             "n",
                             "user",
                             "presence_penalty",
                             "frequency_penalty",
                             "logprobs",
                             "top_logprobs",
                             "logit_bias",
                             "response_format",
                             "tools",
                             "tool_choice",
                             "parallel_tool_calls"});
  return extra;
}

void parse_openai_generation(const json& body, GenParams& out) {
  out.stream = get_bool(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw wrong_type("stream_options", "an object", *so);
    check_known_keys(*so, {"include_usage"}, "stream_options.");
    out.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
  auto max_tokens = get_integer(body, "max_tokens", 1, kMaxInt32);
  if (auto m = get_integer(body, "max_completion_tokens", 1, kMaxInt32)) max_tokens = m;
  out.max_tokens = max_tokens ? int(*max_tokens) : -1;

  SamplingParams& p = out.sampling;
  if (auto t = get_number(body, "temperature", 0, 2)) p.temperature = float(*t);
  if (auto v = get_number(body, "top_p", 0, 1)) {
    if (*v == 0) throw bad_request("'top_p' must be in (0, 1], got 0", "top_p");
    p.top_p = float(*v);
  }
  if (auto v = get_integer(body, "top_k", 0, kMaxInt32)) p.top_k = int(*v);
  if (auto v = get_number(body, "min_p", 0, 1)) p.min_p = float(*v);
  if (auto v = get_number(body, "repeat_penalty", 0, 10)) {
    if (*v == 0)
      throw bad_request("'repeat_penalty' must be > 0 (1: off), got 0", "repeat_penalty");
    p.repeat_penalty = float(*v);
  }
  if (auto v = get_number(body, "presence_penalty", -2, 2)) p.presence_penalty = float(*v);
  if (auto v = get_number(body, "frequency_penalty", -2, 2)) p.frequency_penalty = float(*v);
  const auto seed = get_integer(body, "seed", -1, std::numeric_limits<int64_t>::max());
  p.seed = seed && *seed >= 0 ? uint64_t(*seed) : random_seed();
  if (const json* s = field(body, "stop")) out.stop = parse_stop(*s, "stop");
  check_sampling(p);

  const bool logprobs = get_bool(body, "logprobs").value_or(false);
  const auto top = get_integer(body, "top_logprobs", 0, kMaxTopLogprobs);
  if (top && *top > 0 && !logprobs)
    throw bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  if (logprobs) out.logprobs = int(top.value_or(0));

  get_string(body, "user");  // an end-user id for the caller's own records: type-checked only
  get_bool(body, "parallel_tool_calls");
  if (auto n = get_integer(body, "n", 1, kMaxInt32); n && *n != 1)
    throw unsupported("n", "one choice per request");
  require_neutral(
      body, "logit_bias", [](const json& v) { return v.is_object() && v.empty(); }, "not yet");
  require_neutral(
      body, "response_format",
      [](const json& v) { return v.is_object() && v.size() == 1 && v.value("type", "") == "text"; },
      "only {\"type\": \"text\"}");
  require_neutral(
      body, "tools", [](const json& v) { return v.is_array() && v.empty(); }, "no tool calls");
  require_neutral(
      body, "tool_choice", [](const json& v) { return v == "none"; }, "no tool calls");
}

void parse_ollama_generation(const json& body, int n_ctx, GenParams& out) {
  out.stream = get_bool(body, "stream").value_or(true);  // ollama streams unless told not to
  SamplingParams& p = out.sampling;
  p.seed = random_seed();
  const json* o = field(body, "options");
  if (!o) return;
  if (!o->is_object()) throw wrong_type("options", "an object", *o);
  check_known_keys(
      *o,
      {"temperature", "top_p", "top_k", "min_p", "seed", "num_predict", "stop", "repeat_penalty",
       "repeat_last_n", "presence_penalty", "frequency_penalty", "num_ctx"},
      "options.");
  if (auto t = get_number(*o, "temperature", 0, 2)) p.temperature = float(*t);
  if (auto v = get_number(*o, "top_p", 0, 1)) {
    if (*v == 0) throw bad_request("'top_p' must be in (0, 1], got 0", "top_p");
    p.top_p = float(*v);
  }
  if (auto v = get_integer(*o, "top_k", 0, kMaxInt32)) p.top_k = int(*v);
  if (auto v = get_number(*o, "min_p", 0, 1)) p.min_p = float(*v);
  if (auto v = get_number(*o, "repeat_penalty", 0, 10)) {
    if (*v == 0)
      throw bad_request("'repeat_penalty' must be > 0 (1: off), got 0", "repeat_penalty");
    p.repeat_penalty = float(*v);
  }
  if (auto v = get_integer(*o, "repeat_last_n", -1, kMaxInt32)) p.repeat_last_n = int(*v);
  if (auto v = get_number(*o, "presence_penalty", -2, 2)) p.presence_penalty = float(*v);
  if (auto v = get_number(*o, "frequency_penalty", -2, 2)) p.frequency_penalty = float(*v);
  if (auto v = get_integer(*o, "seed", -1, std::numeric_limits<int64_t>::max()); v && *v >= 0)
    p.seed = uint64_t(*v);
  // -1: no limit; -2: until the context is full (the same here).
  if (auto v = get_integer(*o, "num_predict", -2, kMaxInt32))
    out.max_tokens = *v < 0 ? -1 : int(*v);
  if (const json* s = field(*o, "stop")) out.stop = parse_stop(*s, "stop");
  if (auto v = get_integer(*o, "num_ctx", 1, kMaxInt32); v && *v > n_ctx)
    throw unsupported("options.num_ctx", "the server's context is " + std::to_string(n_ctx) +
                                             " tokens (set with -c when it starts)");
  check_sampling(p);
}

std::vector<tokenizer::ChatMessage> parse_messages(const json& body, bool ollama) {
  const json* msgs = field(body, "messages");
  if (!msgs) throw bad_request("'messages' is required", "messages", "missing_field");
  if (!msgs->is_array()) throw wrong_type("messages", "an array", *msgs);
  if (msgs->empty()) throw bad_request("'messages' is empty", "messages");
  std::vector<tokenizer::ChatMessage> out;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw wrong_type(at, "an object", m);
    for (auto it = m.begin(); it != m.end(); ++it) {
      const std::string& k = it.key();
      if (k == "role" || k == "content") continue;
      if (!ollama && (k == "name" || (k == "refusal" && it->is_null()))) continue;
      if (ollama && k == "images" && (it->is_null() || (it->is_array() && it->empty()))) continue;
      throw unsupported(at + "." + k);
    }
    const json* role = field(m, "role");
    if (!role) throw bad_request("'" + at + ".role' is required", at + ".role", "missing_field");
    if (!role->is_string()) throw wrong_type(at + ".role", "a string", *role);
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant")
      throw bad_request("'" + at + ".role' must be system, user or assistant, got '" + r + "'",
                        at + ".role");
    const json* content = field(m, "content");
    if (!content)
      throw bad_request("'" + at + ".content' is required", at + ".content", "missing_field");
    std::string text;
    if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array() && !ollama) {
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          throw unsupported(at + ".content", "only text parts");
        text += part["text"].get<std::string>();
      }
    } else {
      throw wrong_type(at + ".content", ollama ? "a string" : "a string or an array of text parts",
                       *content);
    }
    out.push_back({r, text});
  }
  return out;
}

void check_model_name(const json& body, const ServedModel& model) {
  const auto name = get_string(body, "model");
  if (name && !model.answers_to(*name))
    throw ApiError(
        404, "the model '" + *name + "' does not exist; this server serves '" + model.id + "'",
        "invalid_request_error", "model", "model_not_found");
}

}  // namespace lockstep::server
