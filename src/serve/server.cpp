#include "focusvla/serve/server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <thread>
#include <utility>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/version.h"
#include "shared.h"

namespace focusvla::serve {
namespace {

using namespace detail;  // NOLINT: the server's own parts (shared.h)

// Connections still in their first HTTP request (30 s to send it) beyond the websocket places:
// room for /healthz, /stats and the 503 answers when every place is taken.
constexpr size_t kHttpSlack = 64;

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
          {"max_prompt_bytes", o.max_prompt_bytes},
          {"max_connections", o.max_connections},
          {"warmup_instructions", o.warmup_instructions},
          {"settings", settings_json(policy.settings())}};
}

void check_options(const ServerOptions& o, const Policy& policy) {
  check(o.max_batch >= 1 && o.max_batch <= 1024, "serve: max_batch", std::to_string(o.max_batch) + " is not in 1 .. 1024");
  check(o.max_wait_ms >= 0 && o.max_wait_ms <= 60000, "serve: max_wait_ms", "not in 0 .. 60000");
  check(o.max_frame_bytes >= 1024, "serve: max_frame_bytes", "below 1 KiB");
  check(o.io_threads >= 1 && o.io_threads <= 256, "serve: io_threads", "not in 1 .. 256");
  check(o.idle_timeout_s > 0, "serve: idle_timeout_s", "must be positive");
  check(o.drain_timeout_s >= 0, "serve: drain_timeout_s", "must not be negative");
  check(o.max_connections >= 1 && o.max_connections <= 100000, "serve: max_connections",
        std::to_string(o.max_connections) + " is not in 1 .. 100000");
  check(o.max_prompt_bytes >= 1 && o.max_prompt_bytes <= (size_t{1} << 20), "serve: max_prompt_bytes",
        std::to_string(o.max_prompt_bytes) + " is not in 1 .. 1048576");
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
      if (shared->live() >= shared->options.max_connections + kHttpSlack) {
        // Every place taken and the HTTP slack too (a flood of sockets that send nothing): dropped
        // at once, before any read, so the server's file descriptors stay bounded.
        shared->stats.connection_refused();
        log_debug("serve: connection dropped: " + std::to_string(shared->live()) + " connections open");
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        start_http(std::move(socket), shared);
      }
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
  for (const auto& instruction : options.warmup_instructions) {
    const double ms = policy.warm_up(instruction, static_cast<int64_t>(options.keys.images.size()));
    log_info("serve: warmed up '" + instruction + "' in " + format_ms(ms) + " ms; " +
             std::to_string(policy.cached_shapes()) + " input shape(s) cached");
  }
  auto shared = std::make_shared<Shared>(policy, options);
  shared->spec.keys = options.keys;
  shared->spec.proprio_dim = policy.proprio_dim();
  shared->spec.max_image_side = options.max_image_side;
  shared->spec.max_prompt_bytes = options.max_prompt_bytes;
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
  // Nobody can be answered any more: what is still queued (a forced stop, the drain timeout) is
  // cancelled, not run; the batch running now finishes.
  if (const size_t n = impl.shared->batcher->cancel_queued("cancelled: the server stopped"))
    log_warn("serve: " + std::to_string(n) + " queued request(s) cancelled by the stop");
  impl.shared->batcher->stop();
  const auto totals = impl.shared->totals();
  log_info("serve: stopped; " + totals.dump());
}

void Server::stop() {
  // A raw pointer: a handler never run (stop() without run()) is destroyed with the io_context,
  // inside Impl; a shared_ptr there would keep Impl alive forever.
  net::post(impl_->strand, [impl = impl_.get()] { impl->begin_stop(); });
}

}  // namespace focusvla::serve
