// The HTTP side of `lockstep serve` (cpp-httplib): binds first, so that /health can answer
// "loading" while the parity gate opens the model; serves the OpenAI, ollama and llama-server
// endpoints (routes.h) once set_model() hands it the model and its scheduler; stops in order
// (no new requests, in-flight ones finish or are cancelled within the grace, then the listener
// and the connection threads end).
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "server/server_context.h"

namespace httplib {
class Server;
}

namespace lockstep::server {

class HttpServer {
 public:
  explicit HttpServer(ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (0: a free port) and returns the port. Throws Error naming the address when
  // it cannot (in use, no such address, no permission).
  int bind(const std::string& host, int port);
  // Accepts connections on a thread of its own.
  void start();
  void set_model(std::shared_ptr<ServedModel> model) { ctx_.set_model(std::move(model)); }
  ServerContext& context() { return ctx_; }
  // Idempotent; returns when every connection thread has ended.
  void stop();

 private:
  ServerContext ctx_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  bool stopped_ = false;
  int listen_socket_ = -1;  // the listening socket, as httplib created it (see bind)
};

}  // namespace lockstep::server
