// GET / (the chat page), GET /metrics (Prometheus text format) and GET /parity (the gate's verdict
// at load and the recent online audits): what shows that serving stays verified.
#include "server/chat_page.h"
#include "server/generation.h"
#include "server/routes.h"

namespace lockstep::server {

void add_verification_routes(httplib::Server& http, ServerContext& ctx) {
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const std::string_view page = chat_page_html();
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
  http.Get("/metrics", guarded(ctx, [&ctx](const httplib::Request&, httplib::Response& res) {
             auto m = ctx.require_model();
             res.set_content(m->guard->metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
           }));
  http.Get("/parity", guarded(ctx, [&ctx](const httplib::Request&, httplib::Response& res) {
             auto m = ctx.require_model();
             nlohmann::ordered_json j = m->guard->parity_json();
             j["lockstep"] = ctx.lockstep_json();
             send_json(res, j);
           }));
}

}  // namespace lockstep::server
