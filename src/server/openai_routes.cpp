// OpenAI's API: /v1/models, /v1/chat/completions, /v1/completions (streaming as server-sent
// events ending with `data: [DONE]`).
#include <string>
#include <vector>

#include "server/generation.h"
#include "server/request_params.h"
#include "server/routes.h"

namespace lockstep::server {

namespace {

using ojson = nlohmann::ordered_json;

ojson usage_json(const Completion& c) {
  return {{"prompt_tokens", c.prompt_tokens},
          {"completion_tokens", c.completion_tokens},
          {"total_tokens", c.prompt_tokens + c.completion_tokens}};
}

std::string sse(const ojson& j) {
  return "data: " + dump(j) + "\n\n";
}

// What every chunk and body starts with.
ojson head(const std::string& id, const char* object, int64_t created, const ServedModel& m) {
  return {{"id", id},
          {"object", object},
          {"created", created},
          {"model", m.id},
          {"system_fingerprint", "lockstep-" + m.backend}};
}

std::vector<int32_t> completion_prompt(const json& body, const tokenizer::Vocab& vocab) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null())
    throw bad_request("'prompt' is required", "prompt", "missing_field");
  json p = *it;
  if (p.is_array() && p.size() == 1 && (p[0].is_string() || p[0].is_array())) p = p[0];
  if (p.is_string()) {
    const std::string text = p.get<std::string>();
    if (text.empty()) throw bad_request("'prompt' is empty", "prompt");
    return vocab.tokenize(text, /*add_special=*/true, /*parse_special=*/true);
  }
  if (p.is_array() && !p.empty()) {
    std::vector<int32_t> ids;
    for (const json& t : p) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab.n_tokens())
        throw bad_request(
            "'prompt' token ids must be integers in [0, " + std::to_string(vocab.n_tokens()) + ")",
            "prompt");
      ids.push_back(t.get<int32_t>());
    }
    return ids;
  }
  if (p.is_array() && p.empty()) throw bad_request("'prompt' is empty", "prompt");
  throw bad_request("'prompt' must be a string or an array of token ids (one prompt per request)",
                    "prompt", "invalid_type");
}

void chat_completions(ServerContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto model = ctx.require_model();
  const json body = parse_body(req.body);
  check_known_keys(body, openai_generation_keys({"messages"}));
  check_model_name(body, *model);
  const auto messages = parse_messages(body, /*ollama=*/false);
  GenParams params;
  parse_openai_generation(body, params);
  auto prompt = tokenizer::tokenize_chat(*model->vocab, model->chat_template, messages, true);

  const std::string id = ctx.next_id("chatcmpl-");
  const int64_t created = unix_now();
  const ServedModel& m = *model;
  auto chunk = [&ctx, id, created, model](ojson delta, ojson finish) {
    ojson j = head(id, "chat.completion.chunk", created, *model);
    j["choices"] = ojson::array({{{"index", 0},
                                  {"delta", std::move(delta)},
                                  {"logprobs", nullptr},
                                  {"finish_reason", std::move(finish)}}});
    return j;
  };
  StreamFormat fmt;
  fmt.content_type = "text/event-stream";
  fmt.begin = [chunk] { return sse(chunk({{"role", "assistant"}, {"content", ""}}, nullptr)); };
  fmt.piece = [chunk](std::string_view text) {
    return sse(chunk({{"content", std::string(text)}}, nullptr));
  };
  fmt.end = [chunk, &ctx](const Completion& c) {
    ojson j = chunk(ojson::object(), c.finish_reason);
    j["usage"] = usage_json(c);
    j["lockstep"] = ctx.lockstep_json();
    return sse(j) + "data: [DONE]\n\n";
  };
  fmt.error = [](const ApiError& e) { return sse(error_json(e)) + "data: [DONE]\n\n"; };
  serve_generation(
      ctx, model, std::move(prompt), params, res,
      [&](const Completion& c) {
        ojson j = head(id, "chat.completion", created, m);
        j["choices"] = ojson::array({{{"index", 0},
                                      {"message", {{"role", "assistant"}, {"content", c.text}}},
                                      {"logprobs", nullptr},
                                      {"finish_reason", c.finish_reason}}});
        j["usage"] = usage_json(c);
        return j;
      },
      fmt);
}

void completions(ServerContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto model = ctx.require_model();
  const json body = parse_body(req.body);
  check_known_keys(body, openai_generation_keys({"prompt", "echo", "suffix", "best_of"}));
  check_model_name(body, *model);
  if (get_bool(body, "echo").value_or(false)) throw unsupported("echo", "not yet");
  if (!get_string(body, "suffix").value_or("").empty()) throw unsupported("suffix");
  if (get_integer(body, "best_of", 1, 1 << 20).value_or(1) != 1)
    throw unsupported("best_of", "one choice per request");
  GenParams params;
  // Legacy completions take an integer `logprobs`; neutral is null (checked as a boolean there).
  json openai_body = body;
  if (auto lp = body.find("logprobs"); lp != body.end() && lp->is_number_integer()) {
    if (lp->get<int64_t>() != 0) throw unsupported("logprobs", "not yet");
    openai_body.erase("logprobs");
  }
  parse_openai_generation(openai_body, params);
  auto prompt = completion_prompt(body, *model->vocab);

  const std::string id = ctx.next_id("cmpl-");
  const int64_t created = unix_now();
  auto chunk = [id, created, model](std::string text, ojson finish) {
    ojson j = head(id, "text_completion", created, *model);
    j["choices"] = ojson::array({{{"text", std::move(text)},
                                  {"index", 0},
                                  {"logprobs", nullptr},
                                  {"finish_reason", std::move(finish)}}});
    return j;
  };
  StreamFormat fmt;
  fmt.content_type = "text/event-stream";
  fmt.piece = [chunk](std::string_view text) { return sse(chunk(std::string(text), nullptr)); };
  fmt.end = [chunk, &ctx](const Completion& c) {
    ojson j = chunk("", c.finish_reason);
    j["usage"] = usage_json(c);
    j["lockstep"] = ctx.lockstep_json();
    return sse(j) + "data: [DONE]\n\n";
  };
  fmt.error = [](const ApiError& e) { return sse(error_json(e)) + "data: [DONE]\n\n"; };
  serve_generation(
      ctx, model, std::move(prompt), params, res,
      [&](const Completion& c) {
        ojson j = chunk(c.text, c.finish_reason);
        j["usage"] = usage_json(c);
        return j;
      },
      fmt);
}

}  // namespace

void add_openai_routes(httplib::Server& http, ServerContext& ctx) {
  http.Get("/v1/models", guarded(ctx, [&ctx](const httplib::Request&, httplib::Response& res) {
             auto m = ctx.require_model();
             ojson j = {{"object", "list"},
                        {"data", ojson::array({{{"id", m->id},
                                                {"object", "model"},
                                                {"created", m->created},
                                                {"owned_by", "lockstep"}}})}};
             j["lockstep"] = ctx.lockstep_json();
             send_json(res, j);
           }));
  http.Post("/v1/chat/completions",
            guarded(ctx, [&ctx](const httplib::Request& req, httplib::Response& res) {
              chat_completions(ctx, req, res);
            }));
  http.Post("/v1/completions",
            guarded(ctx, [&ctx](const httplib::Request& req, httplib::Response& res) {
              completions(ctx, req, res);
            }));
}

}  // namespace lockstep::server
