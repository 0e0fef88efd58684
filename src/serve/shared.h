#pragma once
// What the server's connections share, and how a connection starts. Internal to focusvla_serve:
// server.cpp owns the listening socket and the lifecycle, http_session.cpp the first request of
// every TCP connection, ws_session.cpp an openpi websocket session.

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "focusvla/policy/policy.h"
#include "focusvla/serve/batcher.h"
#include "focusvla/serve/msgpack_numpy.h"
#include "focusvla/serve/server.h"
#include "stats.h"

namespace focusvla::serve::detail {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string server_name();                      // "focusvla-serve/<version>"
std::string endpoint_text(const tcp::socket& socket);  // "address:port" of the peer, "?" when unknown

// A socket the server may have to close on shutdown (an HTTP exchange or a websocket session).
class Connection {
 public:
  virtual ~Connection() = default;
  virtual void drain() = 0;  // any thread
};

// What every connection sees. Owned jointly by the server and its live connections, so a session
// finishing after run() returned (a forced stop) still has it.
struct Shared {
  Policy policy;
  ServerOptions options;
  RequestSpec spec;
  nlohmann::json metadata;
  std::string metadata_frame;
  Stats stats;
  std::unique_ptr<Batcher> batcher;
  std::atomic<bool> draining{false};
  std::atomic<uint64_t> next_id{1};
  std::atomic<uint64_t> next_session{1};  // websocket connections, numbered for the log
  // Websocket sessions, from the upgrade request (a reserved place) to the session's destruction.
  std::atomic<size_t> open_sessions{0};

  std::mutex connections_mutex;
  std::map<uint64_t, std::weak_ptr<Connection>> connections;

  Shared(Policy p, ServerOptions o) : policy(std::move(p)), options(std::move(o)) {}

  uint64_t add(const std::shared_ptr<Connection>& c);
  void remove(uint64_t id);
  size_t live();  // registered connections: HTTP exchanges and websocket sessions
  void drain_all();
  // Takes one of the max_connections websocket places; false (and nothing taken) when all are used.
  bool reserve_session();
  nlohmann::json totals() const {
    nlohmann::json t = stats.totals(batcher ? batcher->cancelled() : 0);
    t["cached_shapes"] = policy.cached_shapes();
    return t;
  }
  // The API key check, in constant time in the key.
  bool authorized(const http::request<http::string_body>& request) const;
};

// Reads the first request of a fresh TCP connection and answers it (http_session.cpp).
void start_http(tcp::socket&& socket, std::shared_ptr<Shared> shared);
// Takes over an upgraded connection whose place reserve_session() took (ws_session.cpp).
void start_websocket(tcp::socket&& socket, std::shared_ptr<Shared> shared, http::request<http::string_body> request);

}  // namespace focusvla::serve::detail
