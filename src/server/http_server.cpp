#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "server/generation.h"
#include "server/routes.h"
#include "util/error.h"

namespace lockstep::server {

namespace {

// Constant-time comparison, so the key cannot be guessed byte by byte from response times.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= unsigned(uint8_t(a[i]) ^ uint8_t(b[i]));
  return diff == 0;
}

void add_lockstep_headers(ServerContext& ctx, httplib::Response& res) {
  if (!res.has_header("X-Lockstep-Backend"))
    res.set_header("X-Lockstep-Backend", ctx.backend_header());
  if (!res.has_header("X-Lockstep-Parity"))
    res.set_header("X-Lockstep-Parity", ctx.parity_header());
}

}  // namespace

HttpServer::HttpServer(ServerOptions options)
    : ctx_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
  const int threads = std::max(4, ctx_.options().http_threads);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  http_->set_payload_max_length(ctx_.options().max_body_bytes);
  // An idle keep-alive connection holds its thread until this runs out, and stop() waits for
  // every thread: it bounds how long a shutdown waits for idle clients.
  http_->set_keep_alive_timeout(2);
  // cpp-httplib listens with a backlog of 5: when more clients than that connect at once, Linux
  // drops the rest of the handshakes until the accept thread catches up (their connect waits a
  // second or more for a retransmit), and some network stacks reset them. The listening socket is
  // noted here as httplib creates it, and bind() raises its backlog.
  http_->set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_socket_ = int(sock);
  });

  http_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string& key = ctx_.options().api_key;
    // The chat page is static (it asks for the key itself when the API wants one).
    if (key.empty() || req.path == "/health" || req.path == "/")
      return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string bearer = "Bearer ";
    if (auth.rfind(bearer, 0) == 0 && same_secret(auth.substr(bearer.size()), key))
      return httplib::Server::HandlerResponse::Unhandled;
    ApiError e(401,
               auth.empty() ? "an API key is required (Authorization: Bearer KEY)"
                            : "the API key is not valid",
               "authentication_error", "", "invalid_api_key");
    send_error(ctx_, res, e);
    res.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  });

  // httplib's own refusals (no such route, body too large, a malformed request) come here with
  // an empty body; they get the same error shape as everything else.
  http_->set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
        add_lockstep_headers(ctx_, res);
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e(res.status, "HTTP error " + std::to_string(res.status), "invalid_request_error");
        if (res.status == 404) {
          e = ApiError(404, "no endpoint " + req.method + " " + req.path, "not_found_error", "",
                       "unknown_endpoint");
        } else if (res.status == 413) {
          e = ApiError(413,
                       "the request body is over the limit of " +
                           std::to_string(ctx_.options().max_body_bytes) + " bytes",
                       "invalid_request_error", "", "body_too_large");
        } else if (res.status == 405) {
          e = ApiError(405, "method " + req.method + " not allowed on " + req.path,
                       "invalid_request_error", "", "method_not_allowed");
        } else if (res.status == 400) {
          e = ApiError(400, "malformed HTTP request", "invalid_request_error", "", "bad_request");
        } else if (res.status >= 500) {
          e.type = "server_error";
        }
        const int status = res.status;
        send_error(ctx_, res, e);
        res.status = status;
        return httplib::Server::HandlerResponse::Handled;
      }));
  http_->set_post_routing_handler(
      [this](const httplib::Request&, httplib::Response& res) { add_lockstep_headers(ctx_, res); });

  add_misc_routes(*http_, ctx_);
  add_openai_routes(*http_, ctx_);
  add_ollama_routes(*http_, ctx_);
  add_verification_routes(*http_, ctx_);
}

HttpServer::~HttpServer() {
  stop();
}

int HttpServer::bind(const std::string& host, int port) {
  errno = 0;
  int bound = port;
  if (port == 0)
    bound = http_->bind_to_any_port(host);
  else if (!http_->bind_to_port(host, port))
    bound = -1;
  if (bound <= 0) {
    const int err = errno;
    throw Error("cannot listen on " + host + ":" + std::to_string(port) +
                (err ? std::string(" (") + std::strerror(err) + ")" : std::string()) +
                "; choose another --host or --port");
  }
  // listen() again on a listening socket only changes its backlog (Linux); the kernel caps it
  // at net.core.somaxconn. A failure leaves httplib's 5, which still serves.
  if (listen_socket_ >= 0) ::listen(listen_socket_, SOMAXCONN);
  return bound;
}

void HttpServer::start() {
  thread_ = std::thread([this] { http_->listen_after_bind(); });
}

void HttpServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (auto m = ctx_.model()) m->guard->shutdown(ctx_.options().shutdown_grace);
  // Every request has its final event now; let the streams write their last chunks (bounded by
  // the write timeout a stuck client would hit) before httplib, stopping, cuts them off.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (ctx_.open_streams.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace lockstep::server
