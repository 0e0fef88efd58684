#include "focusvla/serve/server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <deque>
#include <functional>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/serve/batcher.h"
#include "focusvla/version.h"

namespace focusvla::serve {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 64 * 1024;
const std::string kServerName = std::string("focusvla-serve/") + kVersion;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string format_ms(double ms) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", ms);
  return text;
}

// Nearest-rank quantile of unsorted values (q in 0..1); NaN when empty.
double quantile(std::vector<double> values, double q) {
  if (values.empty()) return std::nan("");
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// Counters of the whole server (GET /stats, the periodic stats line, the stop line).
class Stats {
 public:
  void connection_opened() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++connections_;
    ++open_;
  }
  void connection_closed() {
    std::lock_guard<std::mutex> lock(mutex_);
    --open_;
  }
  void request() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_;
  }
  void error() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++errors_;
    ++interval_errors_;
  }
  void batch(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++batches_;
    batched_ += size;
    max_batch_ = std::max(max_batch_, size);
    ++interval_batches_;
    interval_batched_ += size;
  }
  void reply(double latency_ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++replies_;
    if (interval_latency_ms_.size() < (1u << 20)) interval_latency_ms_.push_back(latency_ms);
  }

  nlohmann::json totals() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {{"connections", connections_},
            {"open_connections", open_},
            {"requests", requests_},
            {"replies", replies_},
            {"errors", errors_},
            {"batches", batches_},
            {"max_batch_seen", max_batch_},
            {"mean_batch", batches_ ? static_cast<double>(batched_) / static_cast<double>(batches_) : 0.0}};
  }
  uint64_t requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

  // The line for the interval since the last call, which starts a new interval.
  std::string interval_line(double seconds, int64_t chunk) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto n = static_cast<double>(interval_latency_ms_.size());
    std::string line = "stats: " + std::to_string(open_) + " open connection(s); last " + format_ms(seconds) +
                       " s: " + std::to_string(interval_latency_ms_.size()) + " replies (" + format_ms(n / seconds) +
                       "/s, " + format_ms(n * static_cast<double>(chunk) / seconds) + " actions/s), " +
                       std::to_string(interval_errors_) + " errors, " + std::to_string(interval_batches_) + " batches";
    if (interval_batches_)
      line += " (mean size " + format_ms(static_cast<double>(interval_batched_) / static_cast<double>(interval_batches_)) + ")";
    if (!interval_latency_ms_.empty())
      line += ", latency p50 " + format_ms(quantile(interval_latency_ms_, 0.5)) + " ms p99 " +
              format_ms(quantile(interval_latency_ms_, 0.99)) + " ms";
    line += "; total " + std::to_string(replies_) + " replies, " + std::to_string(errors_) + " errors";
    interval_latency_ms_.clear();
    interval_errors_ = interval_batches_ = interval_batched_ = 0;
    return line;
  }

 private:
  mutable std::mutex mutex_;
  uint64_t connections_ = 0, open_ = 0, requests_ = 0, replies_ = 0, errors_ = 0, batches_ = 0, batched_ = 0;
  size_t max_batch_ = 0;
  uint64_t interval_errors_ = 0, interval_batches_ = 0, interval_batched_ = 0;
  std::vector<double> interval_latency_ms_;
};

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
  std::atomic<size_t> open_sessions{0};

  std::mutex connections_mutex;
  std::map<uint64_t, std::weak_ptr<Connection>> connections;

  Shared(Policy p, ServerOptions o) : policy(std::move(p)), options(std::move(o)) {}

  uint64_t add(const std::shared_ptr<Connection>& c) {
    const uint64_t id = next_id++;
    std::lock_guard<std::mutex> lock(connections_mutex);
    connections[id] = c;
    return id;
  }
  void remove(uint64_t id) {
    std::lock_guard<std::mutex> lock(connections_mutex);
    connections.erase(id);
  }
  size_t live() {
    std::lock_guard<std::mutex> lock(connections_mutex);
    return connections.size();
  }
  void drain_all() {
    std::vector<std::shared_ptr<Connection>> live;
    {
      std::lock_guard<std::mutex> lock(connections_mutex);
      for (auto& [id, weak] : connections)
        if (auto c = weak.lock()) live.push_back(std::move(c));
    }
    for (auto& c : live) c->drain();
  }

  bool authorized(const http::request<http::string_body>& request) const {
    if (options.api_key.empty()) return true;
    const std::string expected = "Api-Key " + options.api_key;
    const auto given = request[http::field::authorization];
    // Constant time in the key: no early exit on the first differing byte.
    unsigned char diff = given.size() == expected.size() ? 0 : 1;
    for (size_t i = 0; i < expected.size(); ++i)
      diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
    return diff == 0;
  }
};

std::string endpoint_text(const tcp::socket& socket) {
  beast::error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  if (ec) return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

// One websocket connection of the openpi protocol. One request at a time: a request is decoded,
// batched, answered, then the next is taken. Reading goes on while a request is in flight, so
// pings are answered and a client that vanishes is noticed during a long inference; a second
// request that arrives meanwhile is held (and reading paused) until the first is answered. All
// handlers run on the connection's strand; the batcher's completion is posted back to it; frames
// go out through one queue (one write at a time).
class WsSession : public Connection, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, std::shared_ptr<Shared> shared)
      : peer_(endpoint_text(socket)), executor_(socket.get_executor()), ws_(std::move(socket)),
        shared_(std::move(shared)), write_timer_(executor_) {}

  ~WsSession() override {
    if (!registered_) return;
    shared_->remove(registry_id_);
    --shared_->open_sessions;
    shared_->stats.connection_closed();
    log_info("serve: connection " + std::to_string(id_) + " from " + peer_ + " closed after " +
             format_ms(ms_since(opened_) / 1000) + " s: " + std::to_string(requests_) + " request(s), " +
             std::to_string(errors_) + " error(s) (" + (close_reason_.empty() ? "closed" : close_reason_) + ")");
  }

  void accept(http::request<http::string_body> request) {
    const auto& o = shared_->options;
    websocket::stream_base::timeout timeout{};
    timeout.handshake_timeout = std::chrono::seconds(30);
    timeout.idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.idle_timeout_s * 1000));
    timeout.keep_alive_pings = true;
    ws_.set_option(timeout);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& response) { response.set(http::field::server, kServerName); }));
    // The size limit is ours (on_read), so that the client hears which limit it hit.
    ws_.read_message_max(0);
    ws_.auto_fragment(false);
    ws_.async_accept(request, beast::bind_front_handler(&WsSession::on_accept, shared_from_this()));
  }

  void drain() override {
    net::post(executor_, [self = shared_from_this()] {
      self->draining_ = true;
      if (!self->in_flight_) self->close(websocket::close_code::going_away, "server shutting down");
    });
  }

 private:
  struct Message {
    bool binary = true;
    std::string bytes;
  };
  struct Outgoing {
    std::string frame;
    bool binary = true;
    std::function<void(WsSession&)> then;  // after the frame is written
  };

  void on_accept(beast::error_code ec) {
    if (ec) {
      log_debug("serve: websocket handshake with " + peer_ + " failed: " + ec.message());
      return;
    }
    registry_id_ = shared_->add(shared_from_this());
    id_ = shared_->next_session++;
    ++shared_->open_sessions;
    registered_ = true;
    opened_ = Clock::now();
    shared_->stats.connection_opened();
    log_debug("serve: connection " + std::to_string(id_) + " from " + peer_ + " opened");
    if (draining_ || shared_->draining) return close(websocket::close_code::going_away, "server shutting down");
    send(shared_->metadata_frame, /*binary=*/true, {});
    read();
  }

  // Reads in chunks, so that a frame over the limit is caught (and answered) after at most
  // max_frame_bytes + kReadChunk bytes.
  void read() {
    if (reading_ || closing_ || held_) return;
    reading_ = true;
    ws_.async_read_some(buffer_, kReadChunk, beast::bind_front_handler(&WsSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    reading_ = false;
    if (ec) return finished(ec);
    if (closing_) return;
    if (buffer_.size() > shared_->options.max_frame_bytes) return over_limit();
    if (!ws_.is_message_done()) return read();
    const auto bytes = buffer_.data();
    const std::string_view message(static_cast<const char*>(bytes.data()), bytes.size());
    if (in_flight_) {
      held_ = Message{ws_.got_binary(), std::string(message)};  // reading pauses until it is taken
    } else {
      handle(ws_.got_binary(), message);
    }
    buffer_.consume(buffer_.size());
    read();
  }

  // One request: decoded here (on the io thread; every problem an error reply), then batched.
  void handle(bool binary, std::string_view message) {
    in_flight_ = true;
    received_ = Clock::now();
    ++requests_;
    shared_->stats.request();
    if (!binary) return reply_error("request: expected a binary msgpack frame (openpi protocol), got a text frame");
    Observation observation;
    try {
      observation = decode_observation(message.data(), message.size(), shared_->spec);
      shared_->policy.prompt(observation.instruction);  // invalid UTF-8 is this request's error, not its batch's
    } catch (const Error& e) {
      return reply_error(e.what());
    }
    const double decode_ms = ms_since(received_);
    try {
      shared_->batcher->submit(std::move(observation), [self = shared_from_this(), decode_ms](BatchResult result) {
        // From the batcher thread: only the strand (a copy made at construction) is touched here.
        net::post(self->executor_, [self, decode_ms, result = std::move(result)]() mutable {
          self->on_result(std::move(result), decode_ms);
        });
      });
    } catch (const Error& e) {
      reply_error(e.what());
    }
  }

  void on_result(BatchResult result, double decode_ms) {
    if (closing_) return;
    if (!result.chunk) return reply_error("policy: " + result.error);
    const StageTiming& t = result.chunk->timing;
    std::vector<std::pair<std::string, double>> timing = {
        {"infer_ms", result.infer_ms},  {"queue_ms", result.queue_ms},
        {"decode_ms", decode_ms},       {"batch_size", static_cast<double>(result.batch_size)},
        {"preprocess_ms", t.preprocess_ms}, {"vision_ms", t.vision_ms},
        {"projector_ms", t.projector_ms}, {"llm_ms", t.llm_ms},
        {"head_ms", t.head_ms}};
    if (prev_total_ms_) timing.emplace_back("prev_total_ms", *prev_total_ms_);
    send(encode_reply(result.chunk->actions, timing), /*binary=*/true, [](WsSession& self) {
      const double total_ms = ms_since(self.received_);
      self.prev_total_ms_ = total_ms;
      self.shared_->stats.reply(total_ms);
      self.answered();
    });
  }

  // The error goes back as a text frame (openpi's client raises it as RuntimeError); the
  // connection stays open for the next request.
  void reply_error(const std::string& message) {
    ++errors_;
    shared_->stats.error();
    log_warn("serve: connection " + std::to_string(id_) + " (" + peer_ + "): " + message);
    send(message, /*binary=*/false, [](WsSession& self) { self.answered(); });
  }

  // The request in flight is answered: the next one (held, or still to come), or the close of a drain.
  void answered() {
    in_flight_ = false;
    if (draining_ || shared_->draining) return close(websocket::close_code::going_away, "server shutting down");
    if (held_) {
      Message next = std::move(*held_);
      held_.reset();
      handle(next.binary, next.bytes);
    }
    read();
  }

  void over_limit() {
    const std::string limit = std::to_string(shared_->options.max_frame_bytes);
    buffer_.consume(buffer_.size());
    ++errors_;
    shared_->stats.error();
    log_warn("serve: connection " + std::to_string(id_) + " (" + peer_ + "): frame over the " + limit +
             "-byte limit; closing it");
    closing_ = true;  // no more reads or replies; the close follows the error frame
    send("request: frame over the size limit of " + limit + " bytes (focusvla serve --max-frame-mb); closing the connection",
         /*binary=*/false, {});
    close(websocket::close_code::too_big, "frame over the size limit");
  }

  // Queues a frame; frames go out one at a time, in order. A write that does not complete within
  // the idle timeout (a client that stopped reading) closes the socket.
  void send(std::string frame, bool binary, std::function<void(WsSession&)> then) {
    outgoing_.push_back(Outgoing{std::move(frame), binary, std::move(then)});
    if (!writing_) write_next();
  }

  void write_next() {
    if (outgoing_.empty()) {
      if (close_pending_) start_close();
      return;
    }
    writing_ = true;
    ws_.binary(outgoing_.front().binary);
    write_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(shared_->options.idle_timeout_s * 1000)));
    write_timer_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;  // cancelled: the write completed
      if (auto self = weak.lock()) {
        if (self->close_reason_.empty()) self->close_reason_ = "not reading its replies: write timed out";
        beast::error_code ignored;
        beast::get_lowest_layer(self->ws_).socket().close(ignored);
      }
    });
    ws_.async_write(net::buffer(outgoing_.front().frame), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->write_timer_.cancel();
      self->writing_ = false;
      Outgoing done = std::move(self->outgoing_.front());
      self->outgoing_.pop_front();
      if (ec) {
        self->outgoing_.clear();
        return self->finished(ec);
      }
      if (done.then) done.then(*self);
      // `then` may have queued and started the next frame itself (answered() taking a held
      // request that fails at once): never start a second write over it.
      if (!self->writing_) self->write_next();
    });
  }

  // Closes after the frames already queued are out.
  void close(websocket::close_code code, const std::string& reason) {
    if (close_pending_ || close_started_) return;
    closing_ = true;
    close_pending_ = true;
    close_code_ = code;
    if (close_reason_.empty()) close_reason_ = reason;
    if (!writing_) start_close();
  }

  void start_close() {
    close_pending_ = false;
    close_started_ = true;
    ws_.async_close(websocket::close_reason(close_code_, close_reason_), [self = shared_from_this()](beast::error_code ec) {
      if (ec && ec != net::error::operation_aborted) self->finished(ec);
    });
  }

  void finished(beast::error_code ec) {
    closing_ = true;
    if (!close_reason_.empty()) return;
    if (ec == websocket::error::closed)
      close_reason_ = "closed by the client";
    else if (ec == beast::error::timeout)
      close_reason_ = "idle timeout";
    else if (ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe)
      close_reason_ = "client went away: " + ec.message();
    else
      close_reason_ = ec.message();
    if (in_flight_) close_reason_ += " (with a request in flight)";
  }

  std::string peer_;
  net::any_io_executor executor_;  // the connection's strand
  websocket::stream<beast::tcp_stream> ws_;
  std::shared_ptr<Shared> shared_;
  net::steady_timer write_timer_;
  beast::flat_buffer buffer_;
  std::deque<Outgoing> outgoing_;
  std::optional<Message> held_;
  bool reading_ = false, writing_ = false, in_flight_ = false;
  bool draining_ = false, closing_ = false, close_pending_ = false, close_started_ = false, registered_ = false;
  websocket::close_code close_code_ = websocket::close_code::normal;
  uint64_t registry_id_ = 0, id_ = 0, requests_ = 0, errors_ = 0;
  Clock::time_point opened_ = Clock::now(), received_;
  std::optional<double> prev_total_ms_;
  std::string close_reason_;
};

// The first request of every TCP connection: a websocket upgrade (handed to a WsSession), or
// GET /healthz, GET /stats; anything else gets 404. One request per connection.
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
    if (websocket::is_upgrade(request)) {
      if (!shared_->authorized(request)) {
        log_warn("serve: connection from " + peer_ + " refused: missing or wrong API key");
        return respond(request, http::status::unauthorized,
                       "missing or wrong API key (send the header 'Authorization: Api-Key <key>')\n");
      }
      if (shared_->draining) return respond(request, http::status::service_unavailable, "shutting down\n");
      upgraded_ = true;
      stream_.expires_never();
      std::make_shared<WsSession>(stream_.release_socket(), shared_)->accept(std::move(request));
      return;
    }
    const auto target = request.target();
    const bool get = request.method() == http::verb::get || request.method() == http::verb::head;
    if (get && target == "/healthz") return respond(request, http::status::ok, "OK\n");
    if (get && target == "/stats") return respond(request, http::status::ok, shared_->stats.totals().dump() + "\n", "application/json");
    respond(request, http::status::not_found,
            "focusvla serve: a websocket policy server (openpi protocol); GET /healthz, GET /stats\n");
  }

  void respond(const http::request<http::string_body>& request, http::status status, std::string body,
               const char* content_type = "text/plain") {
    auto response = std::make_shared<http::response<http::string_body>>(status, request.version());
    response->set(http::field::server, kServerName);
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

nlohmann::json make_metadata(const Policy& policy, const ServerOptions& o) {
  return {{"server", "focusvla"},
          {"version", kVersion},
          {"protocol", "openpi websocket (msgpack_numpy)"},
          {"head", policy.head_kind()},
          {"chunk", policy.chunk_size()},
          {"action_dim", policy.action_dim()},
          {"cameras", static_cast<int64_t>(o.keys.images.size())},  // == num_images() when that is fixed
          {"proprio_dim", policy.proprio_dim()},
          {"image_keys", o.keys.images},
          {"state_key", policy.proprio_dim() > 0 ? nlohmann::json(o.keys.state) : nlohmann::json(nullptr)},
          {"prompt_key", o.keys.prompt},
          {"max_batch", o.max_batch},
          {"max_wait_ms", o.max_wait_ms},
          {"max_frame_bytes", o.max_frame_bytes},
          {"settings", settings_json(policy.settings())}};
}

void check_options(const ServerOptions& o, const Policy& policy) {
  check(o.max_batch >= 1 && o.max_batch <= 1024, "serve: max_batch", std::to_string(o.max_batch) + " is not in 1 .. 1024");
  check(o.max_wait_ms >= 0 && o.max_wait_ms <= 60000, "serve: max_wait_ms", "not in 0 .. 60000");
  check(o.max_frame_bytes >= 1024, "serve: max_frame_bytes", "below 1 KiB");
  check(o.io_threads >= 1 && o.io_threads <= 256, "serve: io_threads", "not in 1 .. 256");
  check(o.idle_timeout_s > 0, "serve: idle_timeout_s", "must be positive");
  check(o.drain_timeout_s >= 0, "serve: drain_timeout_s", "must not be negative");
  // num_images() 0 (config.json without num_images_in_input): the policy takes any count, the keys fix it.
  check(policy.num_images() == 0 || static_cast<int64_t>(o.keys.images.size()) == policy.num_images(), "serve: image keys",
        std::to_string(o.keys.images.size()) + " given for a policy with " + std::to_string(policy.num_images()) +
            " camera(s): name one per camera, in the checkpoint's order");
  for (const auto& key : o.keys.images) check(!key.empty(), "serve: image keys", "an empty key");
  check(!o.keys.prompt.empty(), "serve: prompt key", "empty");
  check(policy.proprio_dim() == 0 || !o.keys.state.empty(), "serve: state key", "empty, but the policy takes a state");
}

}  // namespace

struct Server::Impl {
  std::shared_ptr<Shared> shared;
  net::io_context ioc;
  // The acceptor, the signals and the timers share one strand: their handlers never overlap.
  net::strand<net::io_context::executor_type> strand = net::make_strand(ioc);
  tcp::acceptor acceptor{strand};
  net::signal_set signals{strand};
  net::steady_timer stats_timer{strand}, drain_timer{strand}, accept_retry{strand};
  Clock::time_point stats_since = Clock::now(), drain_deadline;
  uint16_t port = 0;
  bool ran = false;

  void accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (!acceptor.is_open() || ec == net::error::operation_aborted) return;
      if (ec) {  // e.g. out of file descriptors: back off instead of spinning
        log_warn("serve: accept failed: " + ec.message());
        accept_retry.expires_after(std::chrono::milliseconds(100));
        accept_retry.async_wait([this](beast::error_code e) {
          if (!e) accept();
        });
        return;
      }
      std::make_shared<HttpSession>(std::move(socket), shared)->start();
      accept();
    });
  }

  void stats_tick() {
    const double interval = shared->options.stats_interval_s;
    if (interval <= 0) return;
    stats_timer.expires_after(std::chrono::milliseconds(static_cast<int64_t>(interval * 1000)));
    stats_timer.async_wait([this](beast::error_code ec) {
      if (ec) return;
      const double seconds = std::chrono::duration<double>(Clock::now() - stats_since).count();
      stats_since = Clock::now();
      log_info("serve: " + shared->stats.interval_line(seconds, shared->policy.chunk_size()));
      stats_tick();
    });
  }

  void wait_for_signal() {
    signals.async_wait([this](beast::error_code ec, int signal) {
      if (ec) return;
      log_info(std::string("serve: received ") + (signal == SIGINT ? "SIGINT" : "SIGTERM") +
               (shared->draining ? ": stopping now" : ": finishing in-flight requests, then stopping"));
      // Re-armed first, for a second signal (which forces the stop): begin_stop may end the
      // drain at once (no connections) and cancel this wait; armed after it, it would keep the
      // io_context, and so the process, alive forever.
      if (!shared->draining) wait_for_signal();
      begin_stop();
    });
  }

  // On the io_context. First call: drain; a second: force.
  void begin_stop() {
    if (shared->draining.exchange(true)) {
      log_warn("serve: forced stop");
      ioc.stop();
      return;
    }
    beast::error_code ignored;
    acceptor.close(ignored);
    stats_timer.cancel();
    accept_retry.cancel();
    drain_deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(shared->options.drain_timeout_s * 1000));
    shared->drain_all();
    drain_tick();
  }

  // Until every connection is gone (their in-flight replies written), or the drain deadline.
  void drain_tick() {
    if (shared->live() == 0) {
      signals.cancel();
      return;  // nothing left on the io_context: run() returns
    }
    if (Clock::now() >= drain_deadline) {
      log_warn("serve: " + std::to_string(shared->live()) + " connection(s) still open after the drain timeout; closing them");
      ioc.stop();
      return;
    }
    shared->drain_all();  // connections that were mid-handshake when the drain began
    drain_timer.expires_after(std::chrono::milliseconds(20));
    drain_timer.async_wait([this](beast::error_code ec) {
      if (!ec) drain_tick();
    });
  }
};

Server::Server(Policy policy, ServerOptions options) : impl_(std::make_shared<Impl>()) {
  // A policy whose camera count follows each call gets the reference's LIBERO evaluation keys (two).
  if (options.keys.images.empty())
    options.keys.images = default_observation_keys(policy.num_images() > 0 ? policy.num_images() : 2).images;
  check_options(options, policy);
  auto shared = std::make_shared<Shared>(policy, options);
  shared->spec.keys = options.keys;
  shared->spec.proprio_dim = policy.proprio_dim();
  shared->spec.max_image_side = options.max_image_side;
  shared->metadata = make_metadata(policy, options);
  shared->metadata_frame = encode_json(shared->metadata);
  impl_->shared = shared;

  beast::error_code ec;
  tcp::resolver resolver(impl_->ioc);
  const auto where = options.host + ":" + std::to_string(options.port);
  const auto endpoints = resolver.resolve(options.host, std::to_string(options.port),
                                          tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) throw Error("serve: cannot resolve host '" + options.host + "': " + ec.message());
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw Error("serve: cannot listen on " + where + ": " + ec.message());
  impl_->port = acceptor.local_endpoint().port();

  // The batcher starts last: nothing above can leave a thread behind when it throws.
  std::weak_ptr<Shared> weak = shared;
  shared->batcher = std::make_unique<Batcher>(
      [weak](const std::vector<Observation>& batch) {
        auto s = weak.lock();
        if (!s) throw Error("serve: stopped");
        s->stats.batch(batch.size());
        return s->policy.act_batch(batch);
      },
      BatcherOptions{options.max_batch, std::chrono::microseconds(static_cast<int64_t>(options.max_wait_ms * 1000)),
                     [weak]() -> size_t {
                       auto s = weak.lock();
                       return s ? std::max<size_t>(1, s->open_sessions.load()) : 1;
                     }});
}

Server::~Server() {
  // run() stopped the batcher; without run() nothing is queued. Either way no completion can
  // still be posted to the io_context being destroyed.
  if (impl_->shared->batcher) impl_->shared->batcher->stop();
}

uint16_t Server::port() const { return impl_->port; }
std::string Server::url() const {
  const std::string& host = impl_->shared->options.host;
  return "ws://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(impl_->port);
}
const ServerOptions& Server::options() const { return impl_->shared->options; }
const nlohmann::json& Server::metadata() const { return impl_->shared->metadata; }

void Server::run() {
  Impl& impl = *impl_;
  check(!impl.ran, "Server::run", "called twice");
  impl.ran = true;
  if (impl.shared->draining) return;
  impl.accept();
  impl.stats_tick();
  if (impl.shared->options.handle_signals) {
    impl.signals.add(SIGINT);
    impl.signals.add(SIGTERM);
    impl.wait_for_signal();
  }
  log_info("serve: listening on " + url() + ", metadata " + impl.shared->metadata.dump());
  // A handler that throws (a bug, an allocation failure) is logged and serving goes on.
  auto serve = [&impl] {
    for (;;) {
      try {
        impl.ioc.run();
        return;
      } catch (const std::exception& e) {
        log_warn(std::string("serve: internal error in a connection handler: ") + e.what());
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < impl.shared->options.io_threads; ++i) threads.emplace_back(serve);
  serve();
  for (auto& t : threads) t.join();
  impl.shared->batcher->stop();
  const auto totals = impl.shared->stats.totals();
  log_info("serve: stopped; " + totals.dump());
}

void Server::stop() {
  // A raw pointer: a handler never run (stop() without run()) is destroyed with the io_context,
  // inside Impl; a shared_ptr there would keep Impl alive forever.
  net::post(impl_->strand, [impl = impl_.get()] { impl->begin_stop(); });
}

}  // namespace focusvla::serve
