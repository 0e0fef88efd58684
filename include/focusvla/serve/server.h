#pragma once
// The policy server: one Policy served to many robots over openpi's websocket protocol
// (openpi_client.WebsocketClientPolicy talks to it unchanged; SPEC-free, see
// docs/ARCHITECTURE.md "Serving"):
//
//   connect      -> the server sends its metadata (a msgpack map)
//   binary frame -> a request: msgpack map of numpy arrays (msgpack_numpy.h), decoded into an
//                   Observation and prepared (Policy::prepare: checked, images preprocessed) on
//                   the io thread while the batch before it runs, then batched with other
//                   connections' requests (batcher.h)
//   <- binary    {"actions": float64 (chunk, action_dim), "server_timing": {...}}
//   <- text      an error naming the key and problem; the connection stays open (a frame over
//                the size limit also closes it, code 1009)
//
// Same port: GET /healthz ("OK") and GET /stats (JSON counters). Threads: `io_threads` run all
// sockets (Boost.Asio, one strand per connection, nothing blocking on them), one batcher thread
// runs the policy. A connection has one request in flight at a time; it keeps reading meanwhile
// (pings are answered, a vanished client is noticed) and holds at most one more request, so a
// client that stops reading holds up only itself (and is dropped after the idle timeout).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "focusvla/policy/policy.h"
#include "focusvla/serve/msgpack_numpy.h"

namespace focusvla::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";  // "0.0.0.0" / "::" to serve other machines
  uint16_t port = 8000;            // 0: any free port (see Server::port())
  std::string api_key;             // non-empty: upgrades must carry "Authorization: Api-Key <key>"
  ObservationKeys keys;            // empty images: default_observation_keys(cameras)
  int max_batch = 8;               // 1: no batching
  double max_wait_ms = 2;          // how long a request waits for others to batch with
  size_t max_frame_bytes = size_t{8} << 20;
  int64_t max_image_side = 4096;
  size_t max_prompt_bytes = 4096;  // longer instructions are this request's error
  // Websocket connections open at once; an upgrade beyond it gets 503. Connections still sending
  // their first HTTP request are bounded too (64 more), so a flood cannot exhaust descriptors.
  size_t max_connections = 256;
  // Socket work and request preparation (decode, checks, image preprocessing; measured per camera
  // on the dev VM: 0.7 ms at 224x224, 3 ms at 256x256, 9 ms at 480x640); the policy runs on the
  // batcher thread. Raise it when requests arrive faster than one thread prepares them.
  int io_threads = 1;
  double idle_timeout_s = 300;     // no data (and no answered ping) for this long: connection closed
  double stats_interval_s = 60;    // a stats line at info level; 0: none
  double drain_timeout_s = 30;     // on stop: in-flight requests get this long to finish
  bool handle_signals = false;     // SIGINT / SIGTERM call stop() (the CLI sets this)
  // Before listening: Policy::warm_up with each of these instructions (the robots' own: a shape is
  // its prompt lengths too), so that the first requests find their batch buckets' buffers (and,
  // on CUDA, their captured graphs). An instruction that fails is the constructor's Error.
  std::vector<std::string> warmup_instructions;
};

class Server {
 public:
  // Binds and listens (throws Error naming host:port when that fails, or when the keys do not fit
  // the policy); serving starts with run().
  Server(Policy policy, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  uint16_t port() const;  // the bound port (the chosen one when options.port was 0)
  std::string url() const;  // ws://host:port
  const ServerOptions& options() const;  // with the keys resolved
  // The metadata every connection receives first (also logged at start).
  const nlohmann::json& metadata() const;

  // Serves until stop() (or a signal with handle_signals): stops accepting, lets in-flight
  // requests finish and their replies go out (up to drain_timeout_s), closes every connection
  // (1001, going away), then returns. Call once.
  void run();
  // Thread-safe; returns at once. A second call while draining forces the stop.
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace focusvla::serve
