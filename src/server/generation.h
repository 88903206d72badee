// Running one generation request through the scheduler for an HTTP handler: submit (busy ->
// 503 + Retry-After, rejected -> 400), then either wait for the whole answer or stream it as
// the endpoint's chunks (SSE or NDJSON) from the connection's own thread. A client that goes
// away mid-stream cancels its request: the scheduler frees its slot within one step.
#pragma once

#include <httplib.h>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/api_error.h"
#include "server/request_params.h"
#include "server/server_context.h"

namespace lockstep::server {

// The finished (or failed) request, in API terms.
struct Completion {
  std::string text;
  std::string finish_reason;  // "stop" (end of generation or a stop string) or "length"
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double prompt_ms = 0;  // request start to the first sampled token
  double gen_ms = 0;     // first token to the end
  double total_ms = 0;
  // One per sampled token but an end-of-generation one, when the request asked for logprobs.
  std::vector<TokenLogprobs> logprobs;
};

// How an endpoint writes a stream. Each function returns the bytes to send (framing included).
struct StreamFormat {
  std::string content_type;            // "text/event-stream" or "application/x-ndjson"
  std::function<std::string()> begin;  // before any text; may be null
  std::function<std::string(std::string_view text)> piece;  // one piece of text
  // Used instead of `piece` when the request asks for logprobs: the text with the
  // log-probabilities of the tokens sampled since the last piece (a token whose text is held
  // back, by a stop string or an unfinished UTF-8 character, comes with a later piece).
  std::function<std::string(std::string_view text, std::span<const TokenLogprobs> logprobs)>
      piece_with_logprobs;
  std::function<std::string(const Completion&)> end;  // the final chunk(s)
  std::function<std::string(const ApiError&)> error;  // a failure after the stream began
};

// Whether the HTTP connection `req` arrived on has been closed by its client (the peer's end
// read, reset or hung up; data it sent early, such as a pipelined request, does not count).
// Looks the connection's socket up once and caches it in `fd` (-1 before the first call, -2
// when it cannot be found; then the answer is always false).
bool client_gone(const httplib::Request& req, int& fd);

// The prompt must already be tokenized; `params` checked. Throws ApiError for a prompt that does
// not fit the context (with max_tokens when given), a busy queue, or a server that is stopping.
// Non-streaming: the 200 body is `body(completion)` plus the lockstep field.
void serve_generation(ServerContext& ctx, std::shared_ptr<ServedModel> model,
                      std::vector<int32_t> prompt, const GenParams& params,
                      const httplib::Request& http_req, httplib::Response& res,
                      const std::function<nlohmann::ordered_json(const Completion&)>& body,
                      const StreamFormat& format);

// Writes a JSON body (invalid UTF-8 replaced, never thrown on).
void send_json(httplib::Response& res, const nlohmann::ordered_json& j, int status = 200);
std::string dump(const nlohmann::ordered_json& j);

}  // namespace lockstep::server
