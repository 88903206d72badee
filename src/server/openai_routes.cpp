// OpenAI's API: /v1/models, /v1/chat/completions, /v1/completions (streaming as server-sent
// events ending with `data: [DONE]`).
#include <algorithm>
#include <memory>
#include <span>
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

// OpenAI reports log-probabilities too small for a float as -9999 (JSON has no -infinity).
double finite_logprob(double lp) {
  return std::max(lp, -9999.0);
}

// A token's text and UTF-8 bytes (a token may hold part of a character: its bytes say which).
ojson chat_token_entry(const tokenizer::Vocab& vocab, int32_t id, double logprob) {
  const std::string piece = vocab.token_to_piece(id);
  ojson bytes = ojson::array();
  for (unsigned char c : piece) bytes.push_back(int(c));
  return {{"token", piece}, {"logprob", finite_logprob(logprob)}, {"bytes", std::move(bytes)}};
}

// Chat's choices[].logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}.
ojson chat_logprobs(const tokenizer::Vocab& vocab, std::span<const TokenLogprobs> lps) {
  ojson content = ojson::array();
  for (const auto& lp : lps) {
    ojson e = chat_token_entry(vocab, lp.token, lp.logprob);
    ojson top = ojson::array();
    for (const auto& [id, l] : lp.top) top.push_back(chat_token_entry(vocab, id, l));
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return {{"content", std::move(content)}};
}

// Legacy completions' choices[].logprobs: parallel arrays, text_offset counted in bytes of the
// completion from `offset` (advanced past these tokens).
ojson completion_logprobs(const tokenizer::Vocab& vocab, std::span<const TokenLogprobs> lps,
                          size_t& offset) {
  ojson tokens = ojson::array(), token_logprobs = ojson::array(), top = ojson::array(),
        offsets = ojson::array();
  for (const auto& lp : lps) {
    const std::string piece = vocab.token_to_piece(lp.token);
    tokens.push_back(piece);
    token_logprobs.push_back(finite_logprob(lp.logprob));
    ojson alternatives = ojson::object();
    for (const auto& [id, l] : lp.top) {
      const std::string alt = vocab.token_to_piece(id);
      if (!alternatives.contains(alt)) alternatives[alt] = finite_logprob(l);
    }
    top.push_back(std::move(alternatives));
    offsets.push_back(offset);
    offset += piece.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
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
  auto chunk = [id, created, model](ojson delta, ojson finish, ojson logprobs = nullptr) {
    ojson j = head(id, "chat.completion.chunk", created, *model);
    j["choices"] = ojson::array({{{"index", 0},
                                  {"delta", std::move(delta)},
                                  {"logprobs", std::move(logprobs)},
                                  {"finish_reason", std::move(finish)}}});
    return j;
  };
  StreamFormat fmt;
  fmt.content_type = "text/event-stream";
  fmt.begin = [chunk] { return sse(chunk({{"role", "assistant"}, {"content", ""}}, nullptr)); };
  fmt.piece = [chunk](std::string_view text) {
    return sse(chunk({{"content", std::string(text)}}, nullptr));
  };
  if (params.logprobs >= 0)
    fmt.piece_with_logprobs = [chunk, model](std::string_view text,
                                             std::span<const TokenLogprobs> lps) {
      return sse(
          chunk({{"content", std::string(text)}}, nullptr, chat_logprobs(*model->vocab, lps)));
    };
  fmt.end = [chunk, &ctx](const Completion& c) {
    ojson j = chunk(ojson::object(), c.finish_reason);
    j["usage"] = usage_json(c);
    j["lockstep"] = ctx.lockstep_json();
    return sse(j) + "data: [DONE]\n\n";
  };
  fmt.error = [](const ApiError& e) { return sse(error_json(e)) + "data: [DONE]\n\n"; };
  serve_generation(
      ctx, model, std::move(prompt), params, req, res,
      [&](const Completion& c) {
        ojson j = head(id, "chat.completion", created, m);
        ojson logprobs = nullptr;
        if (params.logprobs >= 0) logprobs = chat_logprobs(*m.vocab, c.logprobs);
        j["choices"] = ojson::array({{{"index", 0},
                                      {"message", {{"role", "assistant"}, {"content", c.text}}},
                                      {"logprobs", std::move(logprobs)},
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
  // Legacy completions take an integer `logprobs` (alternatives per token; null: none) and no
  // top_logprobs.
  const auto n_logprobs = get_integer(body, "logprobs", 0, kMaxTopLogprobs);
  if (body.contains("top_logprobs")) throw unsupported("top_logprobs", "use 'logprobs': N");
  json openai_body = body;
  openai_body.erase("logprobs");
  parse_openai_generation(openai_body, params);
  if (n_logprobs) params.logprobs = int(*n_logprobs);
  auto prompt = completion_prompt(body, *model->vocab);

  const std::string id = ctx.next_id("cmpl-");
  const int64_t created = unix_now();
  auto chunk = [id, created, model](std::string text, ojson finish, ojson logprobs = nullptr) {
    ojson j = head(id, "text_completion", created, *model);
    j["choices"] = ojson::array({{{"text", std::move(text)},
                                  {"index", 0},
                                  {"logprobs", std::move(logprobs)},
                                  {"finish_reason", std::move(finish)}}});
    return j;
  };
  StreamFormat fmt;
  fmt.content_type = "text/event-stream";
  fmt.piece = [chunk](std::string_view text) { return sse(chunk(std::string(text), nullptr)); };
  if (params.logprobs >= 0)
    fmt.piece_with_logprobs = [chunk, model, offset = std::make_shared<size_t>(0)](
                                  std::string_view text, std::span<const TokenLogprobs> lps) {
      return sse(
          chunk(std::string(text), nullptr, completion_logprobs(*model->vocab, lps, *offset)));
    };
  fmt.end = [chunk, &ctx](const Completion& c) {
    ojson j = chunk("", c.finish_reason);
    j["usage"] = usage_json(c);
    j["lockstep"] = ctx.lockstep_json();
    return sse(j) + "data: [DONE]\n\n";
  };
  fmt.error = [](const ApiError& e) { return sse(error_json(e)) + "data: [DONE]\n\n"; };
  serve_generation(
      ctx, model, std::move(prompt), params, req, res,
      [&](const Completion& c) {
        ojson logprobs = nullptr;
        size_t offset = 0;
        if (params.logprobs >= 0) logprobs = completion_logprobs(*model->vocab, c.logprobs, offset);
        ojson j = chunk(c.text, c.finish_reason, std::move(logprobs));
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
