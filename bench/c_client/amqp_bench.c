/*
 * amqp_bench: the C reference client for fastrpc's benchmarks.
 *
 * Built on rabbitmq-c (librabbitmq 0.11, Debian) so that fastrpc can be
 * compared with a plain C client on the same broker in the same run.
 *
 *   amqp_bench publish    HOST PORT QUEUE N SIZE
 *   amqp_bench consume    HOST PORT QUEUE N
 *   amqp_bench rpc-server  HOST PORT QUEUE [EXCHANGE]
 *   amqp_bench rpc-call    HOST PORT QUEUE N SIZE [MAX_SECONDS [EXCHANGE]]
 *   amqp_bench rpc-callers HOST PORT QUEUE THREADS SIZE SECONDS [EXCHANGE]
 *   amqp_bench cast-server HOST PORT QUEUE [EXCHANGE]
 *   amqp_bench cast        HOST PORT QUEUE N SIZE SECONDS [EXCHANGE]
 *
 * With EXCHANGE, requests go through a topic exchange of that name (the
 * server declares it and binds QUEUE with QUEUE as routing key), as RPC
 * requests of oslo.messaging and fastrpc do; without it, through the default
 * exchange straight to QUEUE. Replies always take the default exchange.
 *
 * rpc-callers runs THREADS caller threads for SECONDS, each with its own
 * connection and reply queue (a rabbitmq-c connection must not be used by
 * two threads at once), each making sequential calls.
 *
 * cast publishes casts for SECONDS (at most N, checking the clock every 100),
 * then one request with reply_to; cast-server counts the casts, acks once per
 * socket read (at most 16 deliveries per ack), and answers that request with
 * how many casts it received since the previous one and when it received the
 * first and the last. The result is end to end: from the first cast published
 * to the last one received.
 *
 * Credentials and vhost come from AMQP_BENCH_USER, AMQP_BENCH_PASSWORD and
 * AMQP_BENCH_VHOST (default guest / guest / "/"), never from argv, so they do
 * not show up in process listings. Results are one JSON object on stdout.
 *
 * Exit codes: 0 ok, 2 usage, 3 cannot connect, 4 login refused,
 * 5 protocol or channel error, 6 timed out waiting for the broker.
 */

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define EXIT_USAGE 2
#define EXIT_CONNECT 3
#define EXIT_LOGIN 4
#define EXIT_PROTOCOL 5
#define EXIT_TIMEOUT 6

#define CHANNEL 1
#define CONSUME_PREFETCH 1000
#define ACK_EVERY 100
#define RPC_SERVER_PREFETCH 256
/* Casts: prefetch unlimited and one ack per read of up to 16 deliveries, as
 * fastrpc's listener does (its default prefetch is 0, unlimited). */
#define CAST_ACK_MAX 16
#define CHECK_CLOCK_EVERY 100
#define MAX_THREADS 256
/* Silence longer than this while waiting for a message is a failure, not a hang. */
#define WAIT_SECONDS 30

static const char *mode_name = "?";

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(int code, const char *what, const char *detail) {
  fprintf(stderr, "amqp_bench %s: %s: %s\n", mode_name, what, detail);
  exit(code);
}

/* Turn a synchronous reply into a readable error and the matching exit code. */
static void check_reply(amqp_rpc_reply_t r, const char *what) {
  char buf[512];
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return;
    case AMQP_RESPONSE_NONE:
      fail(EXIT_PROTOCOL, what, "missing reply from broker");
      break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      if (r.library_error == AMQP_STATUS_TIMEOUT || r.library_error == AMQP_STATUS_HEARTBEAT_TIMEOUT) {
        fail(EXIT_TIMEOUT, what, amqp_error_string2(r.library_error));
      }
      fail(EXIT_PROTOCOL, what, amqp_error_string2(r.library_error));
      break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = (amqp_connection_close_t *)r.reply.decoded;
        snprintf(buf, sizeof buf, "broker closed the connection: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        /* 403 ACCESS_REFUSED during login means bad credentials or vhost. */
        fail(m->reply_code == 403 ? EXIT_LOGIN : EXIT_PROTOCOL, what, buf);
      } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = (amqp_channel_close_t *)r.reply.decoded;
        snprintf(buf, sizeof buf, "broker closed the channel: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        fail(EXIT_PROTOCOL, what, buf);
      }
      snprintf(buf, sizeof buf, "unexpected server method 0x%08X", r.reply.id);
      fail(EXIT_PROTOCOL, what, buf);
      break;
  }
  fail(EXIT_PROTOCOL, what, "unknown reply type");
}

static const char *env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return (v && *v) ? v : fallback;
}

static long parse_long(const char *s, const char *what, long min) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min) {
    char buf[128];
    snprintf(buf, sizeof buf, "expected an integer >= %ld, got '%s'", min, s);
    fail(EXIT_USAGE, what, buf);
  }
  return v;
}

static double parse_seconds(const char *s, const char *what) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= 0) || v > 1e6) {
    char buf[128];
    snprintf(buf, sizeof buf, "expected seconds between 0 and 1e6, got '%s'", s);
    fail(EXIT_USAGE, what, buf);
  }
  return v;
}

static amqp_connection_state_t open_connection(const char *host, int port) {
  amqp_connection_state_t conn = amqp_new_connection();
  if (!conn) fail(EXIT_CONNECT, "connection", "out of memory");
  amqp_socket_t *sock = amqp_tcp_socket_new(conn);
  if (!sock) fail(EXIT_CONNECT, "connection", "cannot create TCP socket");
  struct timeval tv = {10, 0};
  int rc = amqp_socket_open_noblock(sock, host, port, &tv);
  if (rc != AMQP_STATUS_OK) {
    char buf[256];
    snprintf(buf, sizeof buf, "cannot connect to %s:%d: %s", host, port, amqp_error_string2(rc));
    fail(EXIT_CONNECT, "connection", buf);
  }
  /* No heartbeat: rabbitmq-c only sends them inside library calls, and a
   * benchmark run is short. */
  amqp_rpc_reply_t r = amqp_login(conn, env_or("AMQP_BENCH_VHOST", "/"), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                  env_or("AMQP_BENCH_USER", "guest"), env_or("AMQP_BENCH_PASSWORD", "guest"));
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
    /* RabbitMQ drops the socket on a failed PLAIN login. */
    fail(EXIT_LOGIN, "login", "broker refused the credentials or the virtual host");
  }
  check_reply(r, "login");
  amqp_channel_open(conn, CHANNEL);
  check_reply(amqp_get_rpc_reply(conn), "channel.open");
  return conn;
}

static void close_connection(amqp_connection_state_t conn) {
  check_reply(amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS), "channel.close");
  check_reply(amqp_connection_close(conn, AMQP_REPLY_SUCCESS), "connection.close");
  amqp_destroy_connection(conn);
}

/* Durable, not exclusive, no arguments: the same declaration the Python side makes,
 * and one RabbitMQ 4.x accepts by default. */
static uint32_t declare_queue(amqp_connection_state_t conn, const char *queue) {
  amqp_queue_declare_ok_t *ok =
      amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "queue.declare");
  return ok->message_count;
}

/* A non-durable topic exchange, QUEUE bound to it by its own name. */
static void bind_to_topic_exchange(amqp_connection_state_t conn, const char *queue, const char *exchange) {
  amqp_exchange_declare(conn, CHANNEL, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0, 0, 0, 0,
                        amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "exchange.declare");
  amqp_queue_bind(conn, CHANNEL, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange), amqp_cstring_bytes(queue),
                  amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "queue.bind");
}

static amqp_bytes_t make_payload(size_t size) {
  amqp_bytes_t b = amqp_bytes_malloc(size ? size : 1);
  if (!b.bytes) fail(EXIT_PROTOCOL, "payload", "out of memory");
  memset(b.bytes, 'x', b.len);
  b.len = size;
  return b;
}

static void print_rate(const char *mode, long n, double seconds) {
  printf("{\"mode\": \"%s\", \"n\": %ld, \"seconds\": %.6f, \"rate\": %.1f}\n", mode, n, seconds,
         seconds > 0 ? (double)n / seconds : 0.0);
}

static int cmd_publish(const char *host, int port, const char *queue, long n, long size) {
  amqp_connection_state_t conn = open_connection(host, port);
  declare_queue(conn, queue);
  amqp_bytes_t body = make_payload((size_t)size);
  amqp_basic_properties_t props;
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = 1; /* transient */
  amqp_bytes_t exchange = amqp_cstring_bytes("");
  amqp_bytes_t rkey = amqp_cstring_bytes(queue);

  double t0 = now_seconds();
  for (long i = 0; i < n; i++) {
    int rc = amqp_basic_publish(conn, CHANNEL, exchange, rkey, 0, 0, &props, body);
    if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "basic.publish", amqp_error_string2(rc));
  }
  /* A synchronous round trip on the same channel: the broker has taken every
   * publish before it answers, so the clock covers delivery to the broker. */
  declare_queue(conn, queue);
  double dt = now_seconds() - t0;
  print_rate("publish", n, dt);
  amqp_bytes_free(body);
  close_connection(conn);
  return 0;
}

/* Wait for the next delivery; other frames (e.g. basic.ack) are read and dropped. */
static void next_delivery(amqp_connection_state_t conn, amqp_envelope_t *env, const char *what) {
  struct timeval tv = {WAIT_SECONDS, 0};
  for (;;) {
    amqp_maybe_release_buffers(conn);
    amqp_rpc_reply_t r = amqp_consume_message(conn, env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      amqp_frame_t frame;
      int rc = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
      if (rc != AMQP_STATUS_OK) fail(rc == AMQP_STATUS_TIMEOUT ? EXIT_TIMEOUT : EXIT_PROTOCOL, what, amqp_error_string2(rc));
      if (frame.frame_type == AMQP_FRAME_METHOD) {
        if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD || frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
          amqp_rpc_reply_t closed;
          closed.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
          closed.reply = frame.payload.method;
          closed.library_error = 0;
          check_reply(closed, what);
        }
        if (frame.payload.method.id == AMQP_BASIC_CANCEL_METHOD) fail(EXIT_PROTOCOL, what, "consumer cancelled by broker");
      }
      continue;
    }
    check_reply(r, what);
  }
}

static int cmd_consume(const char *host, int port, const char *queue, long n) {
  amqp_connection_state_t conn = open_connection(host, port);
  declare_queue(conn, queue);
  amqp_basic_qos(conn, CHANNEL, 0, CONSUME_PREFETCH, 0);
  check_reply(amqp_get_rpc_reply(conn), "basic.qos");
  double t0 = now_seconds();
  amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "basic.consume");
  uint64_t last_tag = 0, acked = 0;
  for (long i = 0; i < n; i++) {
    amqp_envelope_t env;
    next_delivery(conn, &env, "waiting for delivery");
    last_tag = env.delivery_tag;
    amqp_destroy_envelope(&env);
    if (last_tag - acked >= ACK_EVERY) {
      int rc = amqp_basic_ack(conn, CHANNEL, last_tag, 1);
      if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "basic.ack", amqp_error_string2(rc));
      acked = last_tag;
    }
  }
  if (last_tag > acked) {
    int rc = amqp_basic_ack(conn, CHANNEL, last_tag, 1);
    if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "basic.ack", amqp_error_string2(rc));
  }
  double dt = now_seconds() - t0;
  print_rate("consume", n, dt);
  close_connection(conn);
  return 0;
}

/* A server's wait for its next request (an hour at most per read); frames
 * other than a delivery are read and dropped. A failure is reported under
 * mode when reading such a frame fails, under what otherwise. */
static void next_request(amqp_connection_state_t conn, amqp_envelope_t *env, const char *mode, const char *what) {
  for (;;) {
    struct timeval tv = {3600, 0};
    amqp_maybe_release_buffers(conn);
    amqp_rpc_reply_t r = amqp_consume_message(conn, env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      amqp_frame_t frame;
      int rc = amqp_simple_wait_frame(conn, &frame);
      if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, mode, amqp_error_string2(rc));
      continue;
    }
    check_reply(r, what);
    return;
  }
}

static int cmd_rpc_server(const char *host, int port, const char *queue, const char *exchange) {
  amqp_connection_state_t conn = open_connection(host, port);
  declare_queue(conn, queue);
  if (exchange) bind_to_topic_exchange(conn, queue, exchange);
  amqp_basic_qos(conn, CHANNEL, 0, RPC_SERVER_PREFETCH, 0);
  check_reply(amqp_get_rpc_reply(conn), "basic.qos");
  amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "basic.consume");
  printf("{\"mode\": \"rpc-server\", \"ready\": true}\n");
  fflush(stdout);

  long served = 0;
  int stop = 0;
  while (!stop) {
    amqp_envelope_t env;
    next_request(conn, &env, "rpc-server", "waiting for request");
    amqp_bytes_t req = env.message.body;
    stop = req.len == 4 && memcmp(req.bytes, "stop", 4) == 0;
    amqp_basic_properties_t *in = &env.message.properties;
    if (in->_flags & AMQP_BASIC_REPLY_TO_FLAG) {
      amqp_basic_properties_t out;
      out._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
      out.delivery_mode = 1;
      if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        out._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        out.correlation_id = in->correlation_id;
      }
      /* Echo the request body: the reply is as large as the request. */
      int rc = amqp_basic_publish(conn, CHANNEL, amqp_cstring_bytes(""), in->reply_to, 0, 0, &out, req);
      if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "reply publish", amqp_error_string2(rc));
    }
    int rc = amqp_basic_ack(conn, CHANNEL, env.delivery_tag, 0);
    if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "basic.ack", amqp_error_string2(rc));
    amqp_destroy_envelope(&env);
    if (!stop) served++;
  }
  printf("{\"mode\": \"rpc-server\", \"served\": %ld}\n", served);
  close_connection(conn);
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double percentile(const double *sorted, long n, double p) {
  if (n <= 0) return 0.0;
  long idx = (long)(p * (double)(n - 1) + 0.5);
  return sorted[idx];
}

/* Declare a private reply queue (server-named, exclusive, gone with the
 * connection) and consume it without acks. The name is the caller's to free. */
static amqp_bytes_t open_reply_queue(amqp_connection_state_t conn) {
  amqp_queue_declare_ok_t *ok = amqp_queue_declare(conn, CHANNEL, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "reply queue.declare");
  amqp_bytes_t reply_q = amqp_bytes_malloc_dup(ok->queue);
  amqp_basic_consume(conn, CHANNEL, reply_q, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "basic.consume");
  return reply_q;
}

/* One caller: its connection, reply queue, and the latencies of its calls. */
typedef struct {
  amqp_connection_state_t conn;
  amqp_bytes_t reply_q;
  amqp_bytes_t exchange;
  amqp_bytes_t rkey;
  amqp_bytes_t body;
  long next_id;
  double *lat;
  size_t n, cap;
} caller_t;

static void caller_open(caller_t *c, const char *host, int port, const char *queue, long size,
                        const char *exchange_name) {
  memset(c, 0, sizeof *c);
  c->conn = open_connection(host, port);
  c->reply_q = open_reply_queue(c->conn);
  c->exchange = amqp_cstring_bytes(exchange_name ? exchange_name : "");
  c->rkey = amqp_cstring_bytes(queue);
  c->body = make_payload((size_t)size);
  c->cap = 4096; /* grown on demand */
  c->lat = malloc(sizeof(double) * c->cap);
  if (!c->lat) fail(EXIT_PROTOCOL, "latencies", "out of memory");
}

/* Publish one request and wait for its reply; returns when the reply came. */
static double caller_call(caller_t *c) {
  char corr[32];
  snprintf(corr, sizeof corr, "%ld", c->next_id++);
  amqp_basic_properties_t props;
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
  props.delivery_mode = 1;
  props.reply_to = c->reply_q;
  props.correlation_id = amqp_cstring_bytes(corr);
  double c0 = now_seconds();
  int rc = amqp_basic_publish(c->conn, CHANNEL, c->exchange, c->rkey, 0, 0, &props, c->body);
  if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "request publish", amqp_error_string2(rc));
  for (;;) {
    amqp_envelope_t env;
    next_delivery(c->conn, &env, "waiting for reply");
    amqp_basic_properties_t *p = &env.message.properties;
    int match = (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) && p->correlation_id.len == strlen(corr) &&
                memcmp(p->correlation_id.bytes, corr, p->correlation_id.len) == 0;
    amqp_destroy_envelope(&env);
    if (match) break; /* anything else is a stale reply: drop it */
  }
  double c1 = now_seconds();
  if (c->n == c->cap) {
    c->cap *= 2;
    double *grown = realloc(c->lat, sizeof(double) * c->cap);
    if (!grown) fail(EXIT_PROTOCOL, "latencies", "out of memory");
    c->lat = grown;
  }
  c->lat[c->n++] = c1 - c0;
  return c1;
}

static void caller_close(caller_t *c) {
  free(c->lat);
  amqp_bytes_free(c->body);
  amqp_bytes_free(c->reply_q);
  close_connection(c->conn);
}

static void print_calls(const char *mode, double *lat, long done, double dt) {
  qsort(lat, (size_t)done, sizeof(double), cmp_double);
  printf("{\"mode\": \"%s\", \"n\": %ld, \"seconds\": %.6f, \"rate\": %.1f, \"p50_ms\": %.4f, \"p99_ms\": %.4f}\n",
         mode, done, dt, dt > 0 ? (double)done / dt : 0.0, percentile(lat, done, 0.50) * 1e3,
         percentile(lat, done, 0.99) * 1e3);
}

static int cmd_rpc_call(const char *host, int port, const char *queue, long n, long size, double max_seconds,
                        const char *exchange_name) {
  caller_t c;
  caller_open(&c, host, port, queue, size, exchange_name);
  double t0 = now_seconds();
  for (long i = 0; i < n; i++) {
    double c1 = caller_call(&c);
    if (max_seconds > 0 && c1 - t0 >= max_seconds) break;
  }
  print_calls("rpc-call", c.lat, (long)c.n, now_seconds() - t0);
  caller_close(&c);
  return 0;
}

typedef struct {
  caller_t caller;
  pthread_barrier_t *start;
  const double *deadline;
} caller_thread_t;

static void *caller_thread(void *arg) {
  caller_thread_t *t = arg;
  pthread_barrier_wait(t->start);
  /* As the Python callers do: a call starts only before the deadline. */
  while (now_seconds() < *t->deadline) caller_call(&t->caller);
  return NULL;
}

static int cmd_rpc_callers(const char *host, int port, const char *queue, long threads, long size, double seconds,
                           const char *exchange_name) {
  caller_thread_t *ts = calloc((size_t)threads, sizeof *ts);
  pthread_t *ids = calloc((size_t)threads, sizeof *ids);
  if (!ts || !ids) fail(EXIT_PROTOCOL, "threads", "out of memory");
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  double deadline = 0.0;
  /* Connected before the clock starts, as the Python clients are. */
  for (long i = 0; i < threads; i++) {
    caller_open(&ts[i].caller, host, port, queue, size, exchange_name);
    ts[i].start = &start;
    ts[i].deadline = &deadline;
  }
  for (long i = 0; i < threads; i++) {
    if (pthread_create(&ids[i], NULL, caller_thread, &ts[i]) != 0) fail(EXIT_PROTOCOL, "threads", "cannot start");
  }
  deadline = now_seconds() + seconds;
  double t0 = now_seconds();
  pthread_barrier_wait(&start);
  for (long i = 0; i < threads; i++) pthread_join(ids[i], NULL);
  double dt = now_seconds() - t0;

  size_t total = 0;
  for (long i = 0; i < threads; i++) total += ts[i].caller.n;
  double *lat = malloc(sizeof(double) * (total ? total : 1));
  if (!lat) fail(EXIT_PROTOCOL, "latencies", "out of memory");
  size_t at = 0;
  for (long i = 0; i < threads; i++) {
    memcpy(lat + at, ts[i].caller.lat, sizeof(double) * ts[i].caller.n);
    at += ts[i].caller.n;
  }
  print_calls("rpc-callers", lat, (long)total, dt);
  free(lat);
  for (long i = 0; i < threads; i++) caller_close(&ts[i].caller);
  pthread_barrier_destroy(&start);
  free(ids);
  free(ts);
  return 0;
}

static void ack_upto(amqp_connection_state_t conn, uint64_t tag) {
  int rc = amqp_basic_ack(conn, CHANNEL, tag, 1);
  if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "basic.ack", amqp_error_string2(rc));
}

static int cmd_cast_server(const char *host, int port, const char *queue, const char *exchange) {
  amqp_connection_state_t conn = open_connection(host, port);
  declare_queue(conn, queue);
  if (exchange) bind_to_topic_exchange(conn, queue, exchange);
  amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(conn), "basic.consume");
  printf("{\"mode\": \"cast-server\", \"ready\": true}\n");
  fflush(stdout);

  long hits = 0, total = 0;
  double first = 0.0, last = 0.0;
  uint64_t acked = 0;
  int stop = 0;
  while (!stop) {
    amqp_envelope_t env;
    next_request(conn, &env, "cast-server", "waiting for casts");
    double now = now_seconds();
    amqp_bytes_t body = env.message.body;
    amqp_basic_properties_t *in = &env.message.properties;
    stop = body.len == 4 && memcmp(body.bytes, "stop", 4) == 0;
    if (in->_flags & AMQP_BASIC_REPLY_TO_FLAG) {
      /* The end of a run: every cast published before this request on the
       * same channel has been delivered (one queue, one consumer, in order). */
      char text[128];
      int len = snprintf(text, sizeof text, "%ld %.9f %.9f", hits, first, last);
      amqp_basic_properties_t out;
      out._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
      out.delivery_mode = 1;
      amqp_bytes_t reply = {(size_t)len, text};
      int rc = amqp_basic_publish(conn, CHANNEL, amqp_cstring_bytes(""), in->reply_to, 0, 0, &out, reply);
      if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "reply publish", amqp_error_string2(rc));
      hits = 0;
      first = last = 0.0;
    } else if (!stop) {
      if (hits++ == 0) first = now;
      last = now;
      total++;
    }
    uint64_t tag = env.delivery_tag;
    amqp_destroy_envelope(&env);
    /* One ack per read: when nothing more is buffered, or 16 are waiting. */
    if (tag - acked >= CAST_ACK_MAX || (!amqp_data_in_buffer(conn) && !amqp_frames_enqueued(conn))) {
      ack_upto(conn, tag);
      acked = tag;
    }
  }
  printf("{\"mode\": \"cast-server\", \"received\": %ld}\n", total);
  close_connection(conn);
  return 0;
}

static int cmd_cast(const char *host, int port, const char *queue, long max_n, long size, double seconds,
                    const char *exchange_name) {
  amqp_connection_state_t conn = open_connection(host, port);
  amqp_bytes_t reply_q = open_reply_queue(conn);
  amqp_bytes_t body = make_payload((size_t)size);
  amqp_bytes_t exchange = amqp_cstring_bytes(exchange_name ? exchange_name : "");
  amqp_bytes_t rkey = amqp_cstring_bytes(queue);
  amqp_basic_properties_t props;
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = 1;

  double t_first = now_seconds();
  double deadline = t_first + seconds;
  long n = 0;
  while (n < max_n && (n % CHECK_CLOCK_EVERY || now_seconds() < deadline)) {
    int rc = amqp_basic_publish(conn, CHANNEL, exchange, rkey, 0, 0, &props, body);
    if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "cast publish", amqp_error_string2(rc));
    n++;
  }
  double t_published = now_seconds();

  amqp_basic_properties_t ask;
  ask._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
  ask.delivery_mode = 1;
  ask.reply_to = reply_q;
  int rc = amqp_basic_publish(conn, CHANNEL, exchange, rkey, 0, 0, &ask, amqp_cstring_bytes("count"));
  if (rc != AMQP_STATUS_OK) fail(EXIT_PROTOCOL, "count publish", amqp_error_string2(rc));
  amqp_envelope_t env;
  next_delivery(conn, &env, "waiting for the count");
  char text[128];
  size_t len = env.message.body.len < sizeof text - 1 ? env.message.body.len : sizeof text - 1;
  memcpy(text, env.message.body.bytes, len);
  text[len] = '\0';
  amqp_destroy_envelope(&env);
  long hits = -1;
  double first = 0.0, last = 0.0;
  if (sscanf(text, "%ld %lf %lf", &hits, &first, &last) != 3) fail(EXIT_PROTOCOL, "count", "malformed answer");
  if (hits != n) {
    char buf[128];
    snprintf(buf, sizeof buf, "the consumer received %ld of %ld casts", hits, n);
    fail(EXIT_PROTOCOL, "count", buf);
  }
  double dt = last - t_first;
  printf("{\"mode\": \"cast\", \"n\": %ld, \"seconds\": %.6f, \"rate\": %.1f, \"publish_rate\": %.1f}\n", n, dt,
         dt > 0 ? (double)n / dt : 0.0, t_published > t_first ? (double)n / (t_published - t_first) : 0.0);
  amqp_bytes_free(body);
  amqp_bytes_free(reply_q);
  close_connection(conn);
  return 0;
}

static const char *exchange_arg(const char *name) {
  if (name[0] == '\0' || strlen(name) > 255) fail(EXIT_USAGE, "EXCHANGE", "must be 1 to 255 bytes");
  return name;
}

static void usage(void) {
  fprintf(stderr,
          "usage:\n"
          "  amqp_bench publish     HOST PORT QUEUE N SIZE\n"
          "  amqp_bench consume     HOST PORT QUEUE N\n"
          "  amqp_bench rpc-server  HOST PORT QUEUE [EXCHANGE]\n"
          "  amqp_bench rpc-call    HOST PORT QUEUE N SIZE [MAX_SECONDS [EXCHANGE]]\n"
          "  amqp_bench rpc-callers HOST PORT QUEUE THREADS SIZE SECONDS [EXCHANGE]\n"
          "  amqp_bench cast-server HOST PORT QUEUE [EXCHANGE]\n"
          "  amqp_bench cast        HOST PORT QUEUE N SIZE SECONDS [EXCHANGE]\n"
          "credentials: AMQP_BENCH_USER, AMQP_BENCH_PASSWORD, AMQP_BENCH_VHOST (default guest/guest, /)\n");
  exit(EXIT_USAGE);
}

int main(int argc, char **argv) {
  if (argc < 5) usage();
  mode_name = argv[1];
  const char *host = argv[2];
  int port = (int)parse_long(argv[3], "PORT", 1);
  if (port > 65535) fail(EXIT_USAGE, "PORT", "must be at most 65535");
  const char *queue = argv[4];
  if (strlen(queue) > 255) fail(EXIT_USAGE, "QUEUE", "name longer than 255 bytes");

  if (strcmp(mode_name, "publish") == 0 && argc == 7) {
    return cmd_publish(host, port, queue, parse_long(argv[5], "N", 0), parse_long(argv[6], "SIZE", 0));
  }
  if (strcmp(mode_name, "consume") == 0 && argc == 6) {
    return cmd_consume(host, port, queue, parse_long(argv[5], "N", 0));
  }
  if (strcmp(mode_name, "rpc-server") == 0 && (argc == 5 || argc == 6)) {
    return cmd_rpc_server(host, port, queue, argc == 6 ? exchange_arg(argv[5]) : NULL);
  }
  if (strcmp(mode_name, "rpc-call") == 0 && argc >= 7 && argc <= 9) {
    double max_seconds = argc >= 8 ? parse_seconds(argv[7], "MAX_SECONDS") : 0.0;
    return cmd_rpc_call(host, port, queue, parse_long(argv[5], "N", 1), parse_long(argv[6], "SIZE", 0), max_seconds,
                        argc == 9 ? exchange_arg(argv[8]) : NULL);
  }
  if (strcmp(mode_name, "rpc-callers") == 0 && (argc == 8 || argc == 9)) {
    long threads = parse_long(argv[5], "THREADS", 1);
    if (threads > MAX_THREADS) fail(EXIT_USAGE, "THREADS", "at most 256");
    return cmd_rpc_callers(host, port, queue, threads, parse_long(argv[6], "SIZE", 0),
                           parse_seconds(argv[7], "SECONDS"), argc == 9 ? exchange_arg(argv[8]) : NULL);
  }
  if (strcmp(mode_name, "cast-server") == 0 && (argc == 5 || argc == 6)) {
    return cmd_cast_server(host, port, queue, argc == 6 ? exchange_arg(argv[5]) : NULL);
  }
  if (strcmp(mode_name, "cast") == 0 && (argc == 8 || argc == 9)) {
    return cmd_cast(host, port, queue, parse_long(argv[5], "N", 1), parse_long(argv[6], "SIZE", 0),
                    parse_seconds(argv[7], "SECONDS"), argc == 9 ? exchange_arg(argv[8]) : NULL);
  }
  usage();
  return EXIT_USAGE;
}
