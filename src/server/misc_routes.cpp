// /health, and llama-server's /tokenize and /detokenize; the handler wrapper every route uses.
#include <algorithm>
#include <string>
#include <vector>

#include "server/generation.h"
#include "server/request_params.h"
#include "server/routes.h"
#include "util/error.h"

namespace lockstep::server {

namespace {

using ojson = nlohmann::ordered_json;

void tokenize(ServerContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto model = ctx.require_model();
  const json body = parse_body(req.body);
  check_known_keys(body, {"content", "add_special", "parse_special", "with_pieces"});
  const auto content = get_string(body, "content");
  if (!content) throw bad_request("'content' is required", "content", "missing_field");
  const bool add_special = get_bool(body, "add_special").value_or(false);
  const bool parse_special = get_bool(body, "parse_special").value_or(true);
  const bool with_pieces = get_bool(body, "with_pieces").value_or(false);
  const auto ids = model->vocab->tokenize(*content, add_special, parse_special);
  ojson tokens = ojson::array();
  for (int32_t id : ids) {
    if (with_pieces)
      tokens.push_back({{"id", id}, {"piece", model->vocab->token_to_piece(id, true)}});
    else
      tokens.push_back(id);
  }
  ojson j = {{"tokens", tokens}};
  j["lockstep"] = ctx.lockstep_json();
  send_json(res, j);
}

void detokenize(ServerContext& ctx, const httplib::Request& req, httplib::Response& res) {
  auto model = ctx.require_model();
  const json body = parse_body(req.body);
  check_known_keys(body, {"tokens"});
  auto it = body.find("tokens");
  if (it == body.end() || it->is_null())
    throw bad_request("'tokens' is required", "tokens", "missing_field");
  if (!it->is_array())
    throw bad_request("'tokens' must be an array of token ids", "tokens", "invalid_type");
  std::vector<int32_t> ids;
  for (const json& t : *it) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() >= model->vocab->n_tokens())
      throw bad_request(
          "'tokens' must hold integers in [0, " + std::to_string(model->vocab->n_tokens()) + ")",
          "tokens");
    ids.push_back(t.get<int32_t>());
  }
  ojson j = {{"content", model->vocab->detokenize(ids)}};
  j["lockstep"] = ctx.lockstep_json();
  send_json(res, j);
}

}  // namespace

void send_error(ServerContext& ctx, httplib::Response& res, const ApiError& e) {
  ojson j = error_json(e);
  j["lockstep"] = ctx.lockstep_json();
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
  send_json(res, j, e.status);
}

Handler guarded(ServerContext& ctx, Handler fn) {
  return [&ctx, fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) {
    try {
      fn(req, res);
    } catch (const ApiError& e) {
      send_error(ctx, res, e);
    } catch (const InputError& e) {
      // Bad input the engine found, e.g. a conversation the model's chat template refuses.
      send_error(ctx, res, ApiError(400, e.what(), "invalid_request_error"));
    } catch (const std::exception& e) {
      send_error(ctx, res, ApiError(500, e.what(), "server_error"));
    }
  };
}

void add_misc_routes(httplib::Server& http, ServerContext& ctx) {
  http.Get("/health", [&ctx](const httplib::Request&, httplib::Response& res) {
    auto m = ctx.model();
    ojson j;
    if (!m) {
      j["status"] = "loading";
      j["lockstep"] = ctx.lockstep_json();
      res.set_header("Retry-After", "1");
      send_json(res, j, 503);
      return;
    }
    j["status"] = "ok";
    // Both schedulers' (serving_guard.h: the reference's too while the backend is quarantined).
    j["slots_idle"] = std::max(0, m->scheduler->n_slots() - m->guard->active());
    j["slots_processing"] = m->guard->active();
    j["requests_waiting"] = m->guard->queued();
    j["lockstep"] = ctx.lockstep_json();
    send_json(res, j);
  });
  http.Post("/tokenize", guarded(ctx, [&ctx](const httplib::Request& req, httplib::Response& res) {
              tokenize(ctx, req, res);
            }));
  http.Post("/detokenize",
            guarded(ctx, [&ctx](const httplib::Request& req, httplib::Response& res) {
              detokenize(ctx, req, res);
            }));
}

}  // namespace lockstep::server
