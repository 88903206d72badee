// Reading request bodies strictly: malformed JSON, invalid UTF-8, a wrong type, a value out of
// range, an unknown field or one lockstep does not implement each give a 400 naming the field,
// never a silent default.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "tokenizer/chat_template.h"

namespace lockstep::server {

using json = nlohmann::json;
struct ServedModel;

// The body as a JSON object (400 otherwise).
json parse_body(const std::string& body);

// Every key of `obj` must be in `known` (400 "unsupported parameter" otherwise). `where` prefixes
// the parameter name in messages ("options." for ollama's options).
void check_known_keys(const json& obj, const std::vector<std::string_view>& known,
                      const std::string& where = "");

// Typed optional fields: absent or null gives nullopt; a wrong type or a value outside [lo, hi]
// is a 400 naming `key`.
std::optional<std::string> get_string(const json& obj, const char* key);
std::optional<bool> get_bool(const json& obj, const char* key);
std::optional<double> get_number(const json& obj, const char* key, double lo, double hi);
std::optional<int64_t> get_integer(const json& obj, const char* key, int64_t lo, int64_t hi);

// What a generation request asks for, endpoint-independent.
struct GenParams {
  SamplingParams sampling;  // lockstep's defaults (llama.cpp's) where the request is silent
  int max_tokens = -1;      // -1: until end of generation or a full context
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // OpenAI stream_options.include_usage
  // -1: no log-probabilities; N >= 0: those of each sampled token and its N best alternatives
  // (chat: logprobs + top_logprobs; completions: the integer logprobs).
  int logprobs = -1;
};

// The OpenAI sampling fields of a chat or completion request (temperature, top_p, top_k, min_p,
// repeat_penalty, presence_penalty, frequency_penalty, seed, stop, max_tokens /
// max_completion_tokens, stream, stream_options, chat's logprobs and top_logprobs, and the fields
// accepted only at their neutral value: n, logit_bias, response_format, tools, tool_choice).
// Legacy completions take an integer `logprobs`: the caller reads it and erases it first.
void parse_openai_generation(const json& body, GenParams& out);
// The keys parse_openai_generation reads, plus `extra`, for check_known_keys.
std::vector<std::string_view> openai_generation_keys(std::vector<std::string_view> extra);

// ollama's "options" object (temperature, top_p, top_k, min_p, seed, num_predict, stop,
// repeat_penalty, repeat_last_n, num_ctx up to the server's context) and "stream" (default true).
void parse_ollama_generation(const json& body, int n_ctx, GenParams& out);

// A chat's messages (system / developer / user / assistant; content a string or an array of
// text parts), 400 for anything else.
std::vector<tokenizer::ChatMessage> parse_messages(const json& body, bool ollama);

// The request's "model" must be absent or name the served model (404 model_not_found).
void check_model_name(const json& body, const ServedModel& model);

}  // namespace lockstep::server
