// One websocket connection of the openpi protocol (see server.h for the protocol).
//
// One request at a time: a request is decoded and prepared (checked, images preprocessed) here,
// batched, answered, then the next is taken. Reading goes on while a request is in flight, so
// pings are answered and a client that vanishes is noticed during a long inference (its queued
// request is then cancelled, not run); a second request that arrives meanwhile is held (and
// reading paused) until the first is answered. Every handler runs on the connection's strand, and
// so does the session's destruction (the batcher's completion hands its reference to the strand).
// Frames go out through one queue, one write at a time: `write_` is the only record of a write in
// flight, and write_next() refuses to start a second one.

#include <boost/beast/websocket.hpp>

#include <cassert>
#include <deque>
#include <exception>
#include <functional>
#include <optional>
#include <utility>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "shared.h"

namespace focusvla::serve::detail {
namespace {

namespace websocket = beast::websocket;

constexpr size_t kReadChunk = 64 * 1024;

class WsSession : public Connection, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, std::shared_ptr<Shared> shared)
      : peer_(endpoint_text(socket)), executor_(socket.get_executor()), ws_(std::move(socket)),
        shared_(std::move(shared)), write_timer_(executor_) {}

  ~WsSession() override {
    --shared_->open_sessions;  // the place reserve_session() took
    if (!registered_) return;
    shared_->remove(registry_id_);
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
        [](websocket::response_type& response) { response.set(http::field::server, server_name()); }));
    // The size limit is ours (on_read), so that the client hears which limit it hit.
    ws_.read_message_max(0);
    ws_.auto_fragment(false);
    ws_.async_accept(request, beast::bind_front_handler(&WsSession::on_accept, shared_from_this()));
  }

  void drain() override {
    net::post(executor_, [self = shared_from_this()] {
      self->draining_ = true;
      if (self->request_ == Request::kNone) self->close(websocket::close_code::going_away, "server shutting down");
    });
  }

 private:
  // Where this connection's one request is.
  enum class Request { kNone, kRunning };  // kRunning: decoded, batched or its reply being written
  // Whether a frame is being written. Exactly one write at a time (Beast's rule).
  enum class Write { kIdle, kWriting };
  // kOpen -> kClosing (a close frame queued behind the frames already queued; nothing new is
  // read or answered) -> kCloseSent; or -> kGone when the socket failed or the client closed.
  enum class Phase { kOpen, kClosing, kCloseSent, kGone };

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
    if (reading_ || phase_ != Phase::kOpen || held_) return;
    reading_ = true;
    ws_.async_read_some(buffer_, kReadChunk, beast::bind_front_handler(&WsSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    reading_ = false;
    if (ec) return finished(ec);
    if (phase_ != Phase::kOpen) return;
    if (buffer_.size() > shared_->options.max_frame_bytes) return over_limit();
    if (!ws_.is_message_done()) return read();
    const auto bytes = buffer_.data();
    const std::string_view message(static_cast<const char*>(bytes.data()), bytes.size());
    if (request_ == Request::kRunning) {
      held_ = Message{ws_.got_binary(), std::string(message)};  // reading pauses until it is taken
    } else {
      handle(ws_.got_binary(), message);
    }
    buffer_.consume(buffer_.size());
    read();
  }

  // One request: decoded and prepared here (on the io thread; every problem is this request's
  // error reply, never its batch's), then batched.
  void handle(bool binary, std::string_view message) {
    request_ = Request::kRunning;
    received_ = Clock::now();
    ++requests_;
    shared_->stats.request();
    if (!binary) return reply_error("request: expected a binary msgpack frame (openpi protocol), got a text frame");
    Observation observation;
    try {
      // Checked, and its images preprocessed, here: beside the running batch, not in it.
      observation = shared_->policy.prepare(decode_observation(message.data(), message.size(), shared_->spec));
    } catch (const std::exception& e) {  // Error, c10::Error, std::bad_alloc alike
      return reply_error(e.what());
    }
    const double decode_ms = ms_since(received_);
    // The completion runs on the batcher thread. It moves the session out of this box and hands it
    // to the strand, so the batcher never holds the last reference: ~WsSession (which closes the
    // socket) runs on the strand, never on the batcher thread.
    auto box = std::make_shared<std::shared_ptr<WsSession>>(shared_from_this());
    try {
      shared_->batcher->submit(
          std::move(observation),
          [box, executor = executor_, decode_ms](BatchResult result) {
            net::post(executor, [self = std::move(*box), decode_ms, result = std::move(result)]() mutable {
              self->on_result(std::move(result), decode_ms);
            });
          },
          [gone = gone_] { return gone->load(); });
    } catch (const std::exception& e) {
      reply_error(e.what());
    }
  }

  void on_result(BatchResult result, double decode_ms) {
    if (phase_ != Phase::kOpen) return;
    if (!result.chunk) return reply_error("policy: " + result.error);
    std::string frame;
    try {
      std::vector<std::pair<std::string, double>> timing = {
          {"infer_ms", result.infer_ms},
          {"queue_ms", result.queue_ms},
          {"decode_ms", decode_ms},
          {"batch_size", static_cast<double>(result.batch_size)}};
      for (auto& field : timing_fields(result.chunk->timing)) timing.push_back(std::move(field));
      if (prev_total_ms_) timing.emplace_back("prev_total_ms", *prev_total_ms_);
      frame = encode_reply(result.chunk->actions, timing);
    } catch (const std::exception& e) {
      return reply_error(std::string("server: could not encode the reply: ") + e.what());
    }
    send(std::move(frame), /*binary=*/true, [](WsSession& self) {
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
    request_ = Request::kNone;
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
    // The close follows the error frame; nothing more is read or answered.
    send("request: frame over the size limit of " + limit + " bytes (focusvla serve --max-frame-mb); closing the connection",
         /*binary=*/false, {});
    close(websocket::close_code::too_big, "frame over the size limit");
  }

  // Queues a frame; frames go out one at a time, in order.
  void send(std::string frame, bool binary, std::function<void(WsSession&)> then) {
    outgoing_.push_back(Outgoing{std::move(frame), binary, std::move(then)});
    if (write_ == Write::kIdle) write_next();
  }

  // Starts the next queued frame, or the close queued behind them. A write that does not complete
  // within the idle timeout (a client that stopped reading) closes the socket.
  void write_next() {
    if (write_ != Write::kIdle) {  // never two writes at once: a bug, not a client's doing
      assert(false && "WsSession: a write is already in flight");
      log_warn("serve: connection " + std::to_string(id_) + ": internal error: a second write was started; ignored");
      return;
    }
    if (phase_ == Phase::kGone) return outgoing_.clear();
    if (outgoing_.empty()) {
      if (phase_ == Phase::kClosing) start_close();
      return;
    }
    write_ = Write::kWriting;
    const uint64_t write = ++writes_;
    ws_.binary(outgoing_.front().binary);
    write_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(shared_->options.idle_timeout_s * 1000)));
    write_timer_.async_wait([weak = weak_from_this(), write](beast::error_code ec) {
      auto self = weak.lock();
      // Cancelled, or fired just as this write completed (its handler already queued): a healthy
      // socket is never closed for a write that is done.
      if (ec || !self || self->write_ != Write::kWriting || self->writes_ != write) return;
      if (self->close_reason_.empty()) self->close_reason_ = "not reading its replies: write timed out";
      beast::error_code ignored;
      beast::get_lowest_layer(self->ws_).socket().close(ignored);
    });
    ws_.async_write(net::buffer(outgoing_.front().frame), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_written(ec);
    });
  }

  void on_written(beast::error_code ec) {
    write_timer_.cancel();
    write_ = Write::kIdle;
    Outgoing done = std::move(outgoing_.front());
    outgoing_.pop_front();
    if (ec) {
      outgoing_.clear();
      return finished(ec);
    }
    if (done.then) done.then(*this);  // may queue a frame, and so start its write
    if (write_ == Write::kIdle) write_next();
  }

  // Closes after the frames already queued are out.
  void close(websocket::close_code code, const std::string& reason) {
    if (phase_ != Phase::kOpen) return;
    phase_ = Phase::kClosing;
    gone_->store(true);
    close_code_ = code;
    if (close_reason_.empty()) close_reason_ = reason;
    if (write_ == Write::kIdle) start_close();
  }

  void start_close() {
    phase_ = Phase::kCloseSent;
    ws_.async_close(websocket::close_reason(close_code_, close_reason_), [self = shared_from_this()](beast::error_code ec) {
      if (ec && ec != net::error::operation_aborted) self->finished(ec);
    });
  }

  // The socket failed or the client closed: no more reads or writes; a queued request is cancelled.
  void finished(beast::error_code ec) {
    phase_ = Phase::kGone;
    gone_->store(true);
    if (!close_reason_.empty()) return;
    if (ec == websocket::error::closed)
      close_reason_ = "closed by the client";
    else if (ec == beast::error::timeout)
      close_reason_ = "idle timeout";
    else if (ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe)
      close_reason_ = "client went away: " + ec.message();
    else
      close_reason_ = ec.message();
    if (request_ == Request::kRunning) close_reason_ += " (with a request in flight)";
  }

  std::string peer_;
  net::any_io_executor executor_;  // the connection's strand
  websocket::stream<beast::tcp_stream> ws_;
  std::shared_ptr<Shared> shared_;
  net::steady_timer write_timer_;
  beast::flat_buffer buffer_;
  std::deque<Outgoing> outgoing_;
  std::optional<Message> held_;
  Request request_ = Request::kNone;
  Write write_ = Write::kIdle;
  Phase phase_ = Phase::kOpen;
  bool reading_ = false, draining_ = false, registered_ = false;
  // Set once the session stops answering; the batcher asks it before running our request.
  std::shared_ptr<std::atomic<bool>> gone_ = std::make_shared<std::atomic<bool>>(false);
  websocket::close_code close_code_ = websocket::close_code::normal;
  uint64_t registry_id_ = 0, id_ = 0, requests_ = 0, errors_ = 0, writes_ = 0;
  Clock::time_point opened_ = Clock::now(), received_;
  std::optional<double> prev_total_ms_;
  std::string close_reason_;
};

}  // namespace

void start_websocket(tcp::socket&& socket, std::shared_ptr<Shared> shared, http::request<http::string_body> request) {
  std::make_shared<WsSession>(std::move(socket), std::move(shared))->accept(std::move(request));
}

}  // namespace focusvla::serve::detail
