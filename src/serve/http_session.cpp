// The first request of every TCP connection: a websocket upgrade (handed to a websocket session
// when a place is free), or GET /healthz, GET /stats; anything else gets 404. One request per
// connection.

#include <boost/beast/websocket.hpp>

#include <optional>

#include "focusvla/core/log.h"
#include "focusvla/version.h"
#include "shared.h"

namespace focusvla::serve::detail {

std::string server_name() { return std::string("focusvla-serve/") + kVersion; }

std::string endpoint_text(const tcp::socket& socket) {
  beast::error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  if (ec) return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

uint64_t Shared::add(const std::shared_ptr<Connection>& c) {
  const uint64_t id = next_id++;
  std::lock_guard<std::mutex> lock(connections_mutex);
  connections[id] = c;
  return id;
}

void Shared::remove(uint64_t id) {
  std::lock_guard<std::mutex> lock(connections_mutex);
  connections.erase(id);
}

size_t Shared::live() {
  std::lock_guard<std::mutex> lock(connections_mutex);
  return connections.size();
}

void Shared::drain_all() {
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard<std::mutex> lock(connections_mutex);
    for (auto& [id, weak] : connections)
      if (auto c = weak.lock()) live.push_back(std::move(c));
  }
  for (auto& c : live) c->drain();
}

bool Shared::reserve_session() {
  size_t open = open_sessions.load();
  do {
    if (open >= options.max_connections) return false;
  } while (!open_sessions.compare_exchange_weak(open, open + 1));
  return true;
}

bool Shared::authorized(const http::request<http::string_body>& request) const {
  if (options.api_key.empty()) return true;
  const std::string expected = "Api-Key " + options.api_key;
  const auto given = request[http::field::authorization];
  // Constant time in the key: no early exit on the first differing byte.
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  return diff == 0;
}

namespace {

class HttpSession : public Connection, public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, std::shared_ptr<Shared> shared)
      : peer_(endpoint_text(socket)), stream_(std::move(socket)), shared_(std::move(shared)) {}
  ~HttpSession() override { shared_->remove(id_); }

  void start() {
    id_ = shared_->add(shared_from_this());
    net::dispatch(stream_.get_executor(), beast::bind_front_handler(&HttpSession::read, shared_from_this()));
  }

  void drain() override {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->upgraded_) self->stream_.close();
    });
  }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(16 * 1024);
    parser_->body_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec) {
      if (ec != http::error::end_of_stream && ec != net::error::operation_aborted)
        log_debug("serve: HTTP request from " + peer_ + ": " + ec.message());
      return;
    }
    http::request<http::string_body> request = parser_->release();
    if (beast::websocket::is_upgrade(request)) return upgrade(std::move(request));
    const auto target = request.target();
    const bool get = request.method() == http::verb::get || request.method() == http::verb::head;
    if (get && target == "/healthz") return respond(request, http::status::ok, "OK\n");
    if (get && target == "/stats") return respond(request, http::status::ok, shared_->totals().dump() + "\n", "application/json");
    respond(request, http::status::not_found,
            "focusvla serve: a websocket policy server (openpi protocol); GET /healthz, GET /stats\n");
  }

  void upgrade(http::request<http::string_body> request) {
    if (!shared_->authorized(request)) {
      log_warn("serve: connection from " + peer_ + " refused: missing or wrong API key");
      return respond(request, http::status::unauthorized,
                     "missing or wrong API key (send the header 'Authorization: Api-Key <key>')\n");
    }
    if (shared_->draining) return respond(request, http::status::service_unavailable, "shutting down\n");
    if (!shared_->reserve_session()) {
      shared_->stats.connection_refused();
      const std::string limit = std::to_string(shared_->options.max_connections);
      log_warn("serve: connection from " + peer_ + " refused: all " + limit + " connections in use");
      return respond(request, http::status::service_unavailable,
                     "too many connections: all " + limit + " are in use (focusvla serve --max-connections)\n");
    }
    upgraded_ = true;
    stream_.expires_never();
    start_websocket(stream_.release_socket(), shared_, std::move(request));
  }

  void respond(const http::request<http::string_body>& request, http::status status, std::string body,
               const char* content_type = "text/plain") {
    auto response = std::make_shared<http::response<http::string_body>>(status, request.version());
    response->set(http::field::server, server_name());
    response->set(http::field::content_type, content_type);
    response->keep_alive(false);
    response->body() = request.method() == http::verb::head ? "" : std::move(body);
    response->prepare_payload();
    http::async_write(stream_, *response, [self = shared_from_this(), response](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  std::string peer_;
  beast::tcp_stream stream_;
  std::shared_ptr<Shared> shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  uint64_t id_ = 0;
  bool upgraded_ = false;
};

}  // namespace

void start_http(tcp::socket&& socket, std::shared_ptr<Shared> shared) {
  std::make_shared<HttpSession>(std::move(socket), std::move(shared))->start();
}

}  // namespace focusvla::serve::detail
