// The endpoint families of `lockstep serve`, each registered by its own file, and the wrapper
// that turns whatever a handler throws into an OpenAI-style error response.
#pragma once

#include <httplib.h>

#include <functional>

#include "server/api_error.h"
#include "server/server_context.h"

namespace lockstep::server {

using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

// Runs `fn`; ApiError -> its status and error body (Retry-After when it has one), any other
// exception -> 500.
Handler guarded(ServerContext& ctx, Handler fn);
void send_error(ServerContext& ctx, httplib::Response& res, const ApiError& e);

// GET /health, POST /tokenize, POST /detokenize.
void add_misc_routes(httplib::Server& http, ServerContext& ctx);
// GET /v1/models, POST /v1/chat/completions, POST /v1/completions.
void add_openai_routes(httplib::Server& http, ServerContext& ctx);
// POST /api/chat, POST /api/generate, GET /api/tags, GET /api/version.
void add_ollama_routes(httplib::Server& http, ServerContext& ctx);
// GET / (the chat page), GET /metrics (Prometheus), GET /parity (load verdict and audits).
void add_verification_routes(httplib::Server& http, ServerContext& ctx);

}  // namespace lockstep::server
