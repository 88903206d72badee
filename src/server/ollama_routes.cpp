// ollama's API: /api/chat and /api/generate (newline-delimited JSON, streaming unless
// "stream": false), /api/tags, /api/version, with ollama's field names.
#include <string>
#include <vector>

#include "server/generation.h"
#include "server/request_params.h"
#include "server/routes.h"

namespace lockstep::server {

namespace {

using ojson = nlohmann::ordered_json;

// The version /api/version reports: lockstep's own.
constexpr const char* kVersion = "0.1.0";

int64_t ns(double ms) {
  return int64_t(ms * 1e6);
}

std::string ndjson(const ojson& j) {
  return dump(j) + "\n";
}

ojson line(const ServedModel& m) {
  return {{"model", m.id}, {"created_at", rfc3339_now()}};
}

// The closing fields of the last line (and of a non-streamed answer).
void add_stats(ojson& j, const Completion& c, ServerContext& ctx) {
  j["done"] = true;
  j["done_reason"] = c.finish_reason;
  j["total_duration"] = ns(c.total_ms);
  j["load_duration"] = 0;
  j["prompt_eval_count"] = c.prompt_tokens;
  j["prompt_eval_duration"] = ns(c.prompt_ms);
  j["eval_count"] = c.completion_tokens;
  j["eval_duration"] = ns(c.gen_ms);
  j["lockstep"] = ctx.lockstep_json();
}

void check_neutral_ollama_fields(const json& body) {
  auto empty = [&](const char* key) {
    auto it = body.find(key);
    return it == body.end() || it->is_null() ||
           (it->is_string() && it->get<std::string>().empty()) || (it->is_array() && it->empty());
  };
  for (const char* key : {"format", "images", "context", "template", "suffix", "tools"})
    if (!empty(key)) throw unsupported(key);
  // keep_alive: the model always stays loaded; type-checked only.
  auto ka = body.find("keep_alive");
  if (ka != body.end() && !ka->is_null() && !ka->is_string() && !ka->is_number())
    throw bad_request("'keep_alive' must be a string or a number", "keep_alive", "invalid_type");
}

// Streams `field` ("response" or "message") pieces; the body of a non-streamed answer.
void generate(ServerContext& ctx, const std::shared_ptr<ServedModel>& model,
              std::vector<int32_t> prompt, const GenParams& params, const httplib::Request& req,
              httplib::Response& res, bool chat) {
  auto content = [chat](const std::string& text) -> ojson {
    if (chat) return {{"role", "assistant"}, {"content", text}};
    return text;
  };
  const char* field = chat ? "message" : "response";
  StreamFormat fmt;
  fmt.content_type = "application/x-ndjson";
  fmt.piece = [model, content, field](std::string_view text) {
    ojson j = line(*model);
    j[field] = content(std::string(text));
    j["done"] = false;
    return ndjson(j);
  };
  fmt.end = [model, content, field, &ctx](const Completion& c) {
    ojson j = line(*model);
    j[field] = content("");
    add_stats(j, c, ctx);
    return ndjson(j);
  };
  fmt.error = [](const ApiError& e) { return ndjson(error_json(e)); };
  serve_generation(
      ctx, model, std::move(prompt), params, req, res,
      [&](const Completion& c) {
        ojson j = line(*model);
        j[field] = content(c.text);
        add_stats(j, c, ctx);
        return j;
      },
      fmt);
}

void api_generate(ServerContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto model = ctx.require_model();
  const json body = parse_body(req.body);
  check_known_keys(body, {"model", "prompt", "system", "stream", "options", "raw", "keep_alive",
                          "format", "images", "context", "template", "suffix"});
  check_model_name(body, *model);
  check_neutral_ollama_fields(body);
  GenParams params;
  parse_ollama_generation(body, model->n_ctx(), params);
  const std::string prompt = get_string(body, "prompt").value_or("");
  const std::string system = get_string(body, "system").value_or("");
  const bool raw = get_bool(body, "raw").value_or(false);
  if (prompt.empty()) {
    // ollama's way to load a model: answer at once that it is loaded.
    ojson j = line(*model);
    j["response"] = "";
    j["done"] = true;
    j["done_reason"] = "load";
    j["lockstep"] = ctx.lockstep_json();
    send_json(res, j);
    return;
  }
  std::vector<int32_t> tokens;
  if (raw) {
    if (!system.empty()) throw unsupported("system", "not with raw");
    tokens = model->vocab->tokenize(prompt, /*add_special=*/true, /*parse_special=*/true);
  } else {
    std::vector<tokenizer::ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", prompt});
    tokens = tokenizer::tokenize_chat(*model->vocab, model->chat_template, messages, true);
  }
  generate(ctx, model, std::move(tokens), params, req, res, /*chat=*/false);
}

void api_chat(ServerContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto model = ctx.require_model();
  const json body = parse_body(req.body);
  check_known_keys(body,
                   {"model", "messages", "stream", "options", "keep_alive", "format", "tools"});
  check_model_name(body, *model);
  check_neutral_ollama_fields(body);
  const auto messages = parse_messages(body, /*ollama=*/true);
  GenParams params;
  parse_ollama_generation(body, model->n_ctx(), params);
  auto tokens = tokenizer::tokenize_chat(*model->vocab, model->chat_template, messages, true);
  generate(ctx, model, std::move(tokens), params, req, res, /*chat=*/true);
}

}  // namespace

void add_ollama_routes(httplib::Server& http, ServerContext& ctx) {
  http.Post("/api/generate",
            guarded(ctx, [&ctx](const httplib::Request& req, httplib::Response& res) {
              api_generate(ctx, req, res);
            }));
  http.Post("/api/chat", guarded(ctx, [&ctx](const httplib::Request& req, httplib::Response& res) {
              api_chat(ctx, req, res);
            }));
  http.Get("/api/tags", guarded(ctx, [&ctx](const httplib::Request&, httplib::Response& res) {
             auto m = ctx.require_model();
             ojson details = {{"format", "gguf"},
                              {"family", m->summary.architecture},
                              {"families", ojson::array({m->summary.architecture})},
                              {"parameter_size", std::to_string(m->summary.n_params)},
                              {"quantization_level", m->summary.file_type}};
             ojson entry = {{"name", m->id},
                            {"model", m->id},
                            {"modified_at", rfc3339_now()},
                            {"size", m->summary.file_bytes},
                            {"digest", ""},
                            {"details", details}};
             ojson j = {{"models", ojson::array({entry})}};
             j["lockstep"] = ctx.lockstep_json();
             send_json(res, j);
           }));
  http.Get("/api/version", guarded(ctx, [&ctx](const httplib::Request&, httplib::Response& res) {
             ojson j = {{"version", kVersion}};
             j["lockstep"] = ctx.lockstep_json();
             send_json(res, j);
           }));
}

}  // namespace lockstep::server
