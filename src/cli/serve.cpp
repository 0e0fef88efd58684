#include "serve.h"

#include <cstdio>
#include <cstdlib>

#include "focusvla/core/log.h"
#include "focusvla/serve/server.h"

namespace focusvla::cli {

CLI::App* add_serve_command(CLI::App& app, ServeArgs& a) {
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Serve the policy over openpi's websocket protocol (openpi_client.WebsocketClientPolicy works unchanged): "
      "on connect the server sends its metadata; each binary frame is a msgpack request (numpy arrays as "
      "openpi_client.msgpack_numpy packs them) and gets {\"actions\": float64 (chunk, action_dim), "
      "\"server_timing\": {...}} or a text frame naming what was wrong (the connection stays open). Requests of "
      "concurrent connections that arrive within --max-wait-ms form one batch of up to --max-batch. "
      "GET /healthz and GET /stats on the same port. SIGINT / SIGTERM: stop accepting, finish in-flight "
      "requests, exit 0. Prints 'focusvla serve: listening on ws://HOST:PORT' on stdout when ready; logs "
      "(a line per closed connection, a stats line every --stats-interval-s) go to stderr at info level.");
  serve->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_policy_options(*serve, a.policy, "auto");
  serve->get_option("--checkpoint")->required();
  add_int_option(*serve, "--num-images", a.policy.num_images, 1, 16, "cameras per observation (default: config.json's)");
  serve->add_option("--host", a.host, "address to listen on (0.0.0.0 or :: to serve other machines)")
      ->capture_default_str();
  add_int_option(*serve, "--port", a.port, 0, 65535, "port (0: any free port; default 8000)");
  serve->add_option("--api-key", a.api_key,
                    "refuse websocket connections without the header 'Authorization: Api-Key <key>' (openpi's "
                    "WebsocketClientPolicy(api_key=...)); also read from $FOCUSVLA_API_KEY");
  add_int_option(*serve, "--max-batch", a.max_batch, 1, 1024, "most requests in one forward (1: no batching; default 8)");
  serve->add_option("--max-wait-ms", a.max_wait_ms, "how long a request waits for others to batch with")
      ->check(CLI::Range(0.0, 60000.0))
      ->capture_default_str();
  serve->add_option("--max-frame-mb", a.max_frame_mb, "largest request frame in MiB; larger ones are refused (code 1009)")
      ->check(CLI::Range(0.001, 1024.0))
      ->capture_default_str();
  serve->add_option("--image-key", a.image_keys,
                    "request key of each camera image, in the checkpoint's order (repeat per camera; default: "
                    "observation/image, observation/wrist_image as openpi's LIBERO example)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  serve->add_option("--state-key", a.state_key, "request key of the robot state")->capture_default_str();
  serve->add_option("--prompt-key", a.prompt_key, "request key of the instruction")->capture_default_str();
  add_int_option(*serve, "--max-connections", a.max_connections, 1, 100000,
                 "websocket connections open at once; more get HTTP 503 (default 256)");
  add_int_option(*serve, "--max-prompt-bytes", a.max_prompt_bytes, 1, 1 << 20,
                 "longest instruction in bytes; a longer one is that request's error (default 4096)");
  add_int_list_option(*serve, "--batch-buckets", a.policy.batch_buckets, 1, 1024,
                      "batch sizes a batch is padded up to, so that CUDA graphs are reused (default: 1,2,4,8 on "
                      "CUDA, none on the CPU; 1: no padding)");
  add_int_option(*serve, "--max-cached-shapes", a.policy.max_cached_shapes, 1, 1024,
                 "input shapes (batch size, prompt lengths) whose buffers and CUDA graphs are kept (default 8)");
  serve
      ->add_option("--warmup", a.warmup_instructions,
                   "before listening, run every batch bucket with this instruction (repeat per instruction; the "
                   "robots' own, as a shape includes its prompt length), so the first requests find their CUDA graphs")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  add_int_option(*serve, "--io-threads", a.io_threads, 1, 256,
                 "threads for the sockets and for preparing requests (decoding, checks, image preprocessing; default "
                 "1; the policy has its own thread)");
  serve->add_option("--idle-timeout-s", a.idle_timeout_s,
                    "close a connection that neither sends nor answers pings (nor reads its reply) for this long")
      ->check(CLI::Range(0.1, 1e6))
      ->capture_default_str();
  serve->add_option("--stats-interval-s", a.stats_interval_s, "seconds between stats lines (0: none)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  serve->add_option("--drain-timeout-s", a.drain_timeout_s, "on SIGINT / SIGTERM: how long in-flight requests may take")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  return serve;
}

void run_serve(const ServeArgs& a, bool log_level_given) {
  if (!log_level_given && !std::getenv("FOCUSVLA_LOG_LEVEL")) set_log_level(LogLevel::info);
  const Policy policy = Policy::load(a.policy.checkpoint, policy_options(a.policy));

  serve::ServerOptions options;
  options.host = a.host;
  options.port = static_cast<uint16_t>(a.port);
  options.api_key = a.api_key;
  if (options.api_key.empty())
    if (const char* env = std::getenv("FOCUSVLA_API_KEY")) options.api_key = env;
  options.keys.images = a.image_keys;
  options.keys.state = a.state_key;
  options.keys.prompt = a.prompt_key;
  options.max_batch = a.max_batch;
  options.max_wait_ms = a.max_wait_ms;
  options.max_frame_bytes = static_cast<size_t>(a.max_frame_mb * 1024 * 1024);
  options.io_threads = a.io_threads;
  options.max_connections = static_cast<size_t>(a.max_connections);
  options.max_prompt_bytes = static_cast<size_t>(a.max_prompt_bytes);
  options.idle_timeout_s = a.idle_timeout_s;
  options.stats_interval_s = a.stats_interval_s;
  options.drain_timeout_s = a.drain_timeout_s;
  options.warmup_instructions = a.warmup_instructions;
  options.handle_signals = true;
  serve::Server server(policy, options);

  const auto& o = server.options();
  std::string cameras;
  for (const auto& key : o.keys.images) cameras += (cameras.empty() ? "" : ", ") + key;
  const auto& s = policy.settings();
  std::printf("focusvla serve: listening on %s (%s head on %s, %s; cameras %s; state %s; prompt %s; max batch %d, "
              "max wait %g ms%s)\n",
              server.url().c_str(), s.head.c_str(), s.device.str().c_str(), dtype_name(s.dtype).c_str(),
              cameras.c_str(), policy.proprio_dim() > 0 ? o.keys.state.c_str() : "(none)", o.keys.prompt.c_str(),
              o.max_batch, o.max_wait_ms, o.api_key.empty() ? "" : ", API key required");
  std::fflush(stdout);
  server.run();
}

}  // namespace focusvla::cli
