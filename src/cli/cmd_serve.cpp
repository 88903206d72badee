// `lockstep serve`: an OpenAI- and ollama-compatible HTTP server (src/server/) over the
// continuous-batching scheduler (engine/scheduler.h). The port is bound before the model loads,
// so /health answers "loading" while the parity gate decides; SIGINT/SIGTERM stop it in order
// and it exits 0.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "backend/registry.h"
#include "cli/commands.h"
#include "cli/environment.h"
#include "cli/generation_flags.h"
#include "engine/audit.h"
#include "engine/scheduler.h"
#include "server/http_server.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace lockstep::cli {

namespace {

struct ServeFlags {
  ModelFlags model;
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 4;
  int queue = 64;
  std::string api_key;
  double grace_s = 10;
  double audit_rate = 0.02;
  int audit_every = 0;
  int audit_threads = 0;  // 0: a quarter of the cores, at least 1
  std::string on_drift = "quarantine";
  double reprobe_after_s = 60;
};

// The signal the waiter thread received (0: none yet). Global because the waiter is detached: it
// may outlive serve_command when the process ends some other way.
std::atomic<int> g_signal{0};
std::mutex g_signal_mutex;
std::condition_variable g_signal_cv;

// Blocks SIGINT and SIGTERM in this thread and every thread started after it (the HTTP pool, the
// scheduler, the backend's workers), and starts one thread that waits for them.
void catch_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A client that disconnects mid-stream must not kill the server with SIGPIPE: the failed write
  // is how its request gets cancelled.
  signal(SIGPIPE, SIG_IGN);
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    {
      std::lock_guard<std::mutex> lock(g_signal_mutex);
      g_signal = sig;
    }
    g_signal_cv.notify_all();
  }).detach();
}

std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

int serve_command(const ServeFlags& f) {
  catch_stop_signals();
  const ParityConfig parity = resolve_parity(f.model.parity);
  const std::string path = resolve_model_path(f.model.model);
  const int parallel = f.parallel;

  server::ServerOptions options;
  options.api_key = f.api_key;
  options.http_threads = std::max(64, 4 * parallel + 16);
  options.shutdown_grace = std::chrono::milliseconds(int64_t(f.grace_s * 1000));
  server::HttpServer http(options);
  const int port = http.bind(f.host, f.port);
  http.start();
  std::fprintf(stderr, "lockstep serve: loading %s on http://%s:%d (/health answers loading)\n",
               path.c_str(), url_host(f.host).c_str(), port);
  std::fflush(stderr);

  const auto t0 = std::chrono::steady_clock::now();
  if (const int delay = environment_knobs().serve_load_delay_ms; delay > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));  // TEST KNOB
  auto served = std::make_shared<server::ServedModel>();
  served->model = std::make_unique<Model>(Model::load(path));
  served->vocab =
      std::make_unique<tokenizer::Vocab>(tokenizer::Vocab::from_gguf(*served->model->file));
  served->chat_template = tokenizer::ChatTemplate::for_vocab(*served->vocab);
  OpenRequest request = f.model.request();
  request.options.n_seq = parallel;
  ServingBackend serving = open_backend(*served->model, *served->vocab, request, parity, {});
  served->summary = summarize(*served->model, path);
  served->id = std::filesystem::path(path).stem().string();
  served->backend = serving.backend_used;
  served->verdict = serving.verdict;
  served->created = server::unix_now();
  SchedulerOptions sched;
  sched.queue_capacity = size_t(f.queue);
  served->scheduler =
      std::make_unique<Scheduler>(std::move(serving.backend), *served->vocab, sched);
  server::GuardOptions guard;
  guard.audit_rate = f.audit_rate;
  guard.audit_every = f.audit_every;
  guard.audit_threads = f.audit_threads > 0
                            ? f.audit_threads
                            : std::max(1, int(std::thread::hardware_concurrency()) / 4);
  guard.on_drift = parse_drift_policy(f.on_drift);
  guard.reprobe_after_s = f.reprobe_after_s;
  guard.may_fall_back = request.backend == "auto" && parity.policy == ParityPolicy::Auto;
  guard.parity = parity;
  guard.backend = request.options;
  guard.backend.threads = resolve_threads(request.options.threads);
  guard.backend.n_ctx = served->scheduler->n_ctx();
  guard.scheduler = sched;
  served->guard =
      std::make_unique<server::ServingGuard>(*served->model, *served->vocab, *served->scheduler,
                                             serving.backend_used, serving.verdict, guard);
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr,
               "lockstep serve: %s | %s | %s | backend %s | threads %d | ctx %d per slot | "
               "%d slots | template %s | loaded in %.0f ms\n",
               path.c_str(), served->summary.architecture.c_str(),
               served->summary.file_type.c_str(), served->backend.c_str(),
               resolve_threads(f.model.threads), served->n_ctx(), parallel,
               served->chat_template.description().c_str(), load_ms);
  const std::string backend = served->backend;
  const std::string verdict = serving.verdict.summary();
  http.set_model(std::move(served));
  std::fprintf(stderr, "lockstep serve: listening on http://%s:%d (backend %s, %s)\n",
               url_host(f.host).c_str(), port, backend.c_str(), verdict.c_str());
  std::fflush(stderr);

  {
    std::unique_lock<std::mutex> lock(g_signal_mutex);
    g_signal_cv.wait(lock, [] { return g_signal.load() != 0; });
  }
  std::fprintf(stderr,
               "lockstep serve: %s received; finishing in-flight requests (at most %.0f s)\n",
               g_signal.load() == SIGINT ? "SIGINT" : "SIGTERM", f.grace_s);
  http.stop();
  std::fprintf(stderr, "lockstep serve: stopped\n");
  return 0;
}

}  // namespace

void add_serve(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "serve", "Serve a model over HTTP (OpenAI and ollama APIs) with continuous batching");
  auto f = std::make_shared<ServeFlags>();
  add_model_flags(cmd, f->model);
  add_batch_invariant_flag(cmd, f->model);
  cmd->add_option("--host", f->host, "address to listen on (loopback unless told otherwise)")
      ->capture_default_str();
  cmd->add_option("--port", f->port, "TCP port (0: any free port)")->capture_default_str();
  cmd->add_option("--parallel", f->parallel,
                  "sequences served at once (slots; each has the full -c context)")
      ->capture_default_str();
  cmd->add_option("--queue", f->queue,
                  "requests that may wait for a slot; more are answered 503 + Retry-After")
      ->capture_default_str();
  cmd->add_option("--api-key", f->api_key,
                  "require 'Authorization: Bearer KEY' on every endpoint but /health");
  cmd->add_option("--shutdown-grace", f->grace_s,
                  "seconds in-flight requests may take to finish after SIGINT/SIGTERM")
      ->capture_default_str();
  cmd->add_option("--audit-rate", f->audit_rate,
                  "fraction of requests whose logits the CPU reference re-scores in the "
                  "background (0: no audits)")
      ->capture_default_str();
  cmd->add_option("--audit-every", f->audit_every,
                  "audit every N-th request instead of --audit-rate (0: use the rate)");
  cmd->add_option("--audit-threads", f->audit_threads,
                  "threads of the auditing reference (default: a quarter of the cores)");
  cmd->add_option("--on-drift", f->on_drift,
                  "what a failed audit does: quarantine (new requests go to the CPU reference "
                  "until a re-probe passes), fail (503), log")
      ->capture_default_str();
  cmd->add_option("--reprobe-after", f->reprobe_after_s,
                  "seconds a quarantined backend waits before the gate's probe is run again")
      ->capture_default_str();
  cmd->callback([&action, f] {
    check_model_flags(f->model);
    if (f->port < 0 || f->port > 65535)
      throw CLI::ValidationError("--port", "must be in [0, 65535]");
    if (f->parallel < 1 || f->parallel > 256)
      throw CLI::ValidationError("--parallel", "must be in [1, 256]");
    if (f->queue < 0) throw CLI::ValidationError("--queue", "must be >= 0");
    if (!(f->grace_s >= 0 && f->grace_s <= 3600))
      throw CLI::ValidationError("--shutdown-grace", "must be in [0, 3600] seconds");
    if (!(f->audit_rate >= 0 && f->audit_rate <= 1))
      throw CLI::ValidationError("--audit-rate", "must be in [0, 1]");
    if (f->audit_every < 0) throw CLI::ValidationError("--audit-every", "must be >= 0");
    if (f->audit_threads < 0 || f->audit_threads > 1024)
      throw CLI::ValidationError("--audit-threads", "must be in [1, 1024]");
    if (f->on_drift != "quarantine" && f->on_drift != "fail" && f->on_drift != "log")
      throw CLI::ValidationError("--on-drift",
                                 "must be one of quarantine, fail, log; got '" + f->on_drift + "'");
    if (!(f->reprobe_after_s >= 0 && f->reprobe_after_s <= 86400))
      throw CLI::ValidationError("--reprobe-after", "must be in [0, 86400] seconds");
    action = [f] { return serve_command(*f); };
  });
}

}  // namespace lockstep::cli
