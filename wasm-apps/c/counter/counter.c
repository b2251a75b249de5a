/*
 * c-counter: state that survives a swap; the C twin of
 * wasm-apps/examples/counter. The count lives in the key-value store under
 * "count" (a u64, little-endian), so it also survives a reboot; the number of
 * ticks since the device booted is handed from version to version through
 * the `state` export (`save` / `restore`, also a u64 little-endian), so it
 * can swap with the Rust counter in either direction.
 *
 * Config: `period-ms` (1000). Publishes `counter/value` with the count.
 * World: `stateful-app` (the header included below).
 */
#include "stateful_app.h"
#include "trellis_util.h"

static bool started;
static uint64_t count;
static uint64_t ticks_since_boot;
/* What `restore` was given, taken by `start`. */
static bool restored;
static stateful_app_list_u8_t restored_data;

/* A u64 from exactly 8 little-endian bytes; 0 otherwise (as the Rust counter). */
static uint64_t decode(const uint8_t *p, size_t len) {
  uint64_t v = 0;
  if (len != 8) return 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static void encode(uint64_t v, uint8_t out[8]) {
  for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
}

static stateful_app_string_t literal(const char *s) {
  return (stateful_app_string_t){(uint8_t *)s, strlen(s)};
}

static void log_at(trellis_app_log_log_level_t at, tu_buf *b) {
  stateful_app_string_t message = {b->ptr, b->len};
  trellis_app_log_log(at, &message);
  free(b->ptr);
}

static bool config_u32(stateful_app_list_tuple2_string_string_t *config, const char *key, uint32_t fallback,
                       uint32_t *out, tu_buf *b) {
  stateful_app_string_t *value = NULL;
  for (size_t i = 0; i < config->len; i++) {
    if (tu_eq(config->ptr[i].f0.ptr, config->ptr[i].f0.len, key)) value = &config->ptr[i].f1;
  }
  if (!value) {
    *out = fallback;
    return true;
  }
  if (tu_parse_u32(value->ptr, value->len, out)) return true;
  tu_str(b, "config ");
  tu_str(b, key);
  tu_str(b, " = ");
  tu_debug_str(b, value->ptr, value->len);
  tu_str(b, " is not valid");
  return false;
}

static bool start(stateful_app_list_tuple2_string_string_t *config, tu_buf *b) {
  /* Taken, whatever follows: a later start (a restart of this version) begins from 0. */
  ticks_since_boot = restored ? decode(restored_data.ptr, restored_data.len) : 0;
  if (restored) stateful_app_list_u8_free(&restored_data);
  restored = false;
  stateful_app_string_t key = literal("count");
  stateful_app_option_list_u8_t stored;
  trellis_app_kv_error_t kv_err;
  if (!trellis_app_kv_get(&key, &stored, &kv_err)) {
    TU_HOST_ERROR(*b, kv_err);
    return false;
  }
  count = stored.is_some ? decode(stored.val.ptr, stored.val.len) : 0;
  stateful_app_option_list_u8_free(&stored);
  uint32_t period;
  if (!config_u32(config, "period-ms", 1000, &period, b)) return false;
  trellis_app_timers_timer_id_t id;
  stateful_app_string_t timer_err;
  if (!trellis_app_timers_set_interval(period, &id, &timer_err)) {
    tu_bytes(b, timer_err.ptr, timer_err.len);
    free(timer_err.ptr);
    return false;
  }
  tu_buf msg = {0};
  tu_str(&msg, "counting from ");
  tu_u64(&msg, count);
  tu_str(&msg, " (");
  tu_u64(&msg, ticks_since_boot);
  tu_str(&msg, " ticks since boot)");
  log_at(TRELLIS_APP_LOG_LOG_LEVEL_INFO, &msg);
  started = true;
  return true;
}

bool exports_stateful_app_start(stateful_app_list_tuple2_string_string_t *config, stateful_app_string_t *err) {
  tu_buf b = {0};
  bool ok = start(config, &b);
  stateful_app_list_tuple2_string_string_free(config);
  if (!ok) TU_INTO_STRING(err, b);
  return ok;
}

static bool on_timer(tu_buf *b) {
  count++;
  ticks_since_boot++;
  uint8_t bytes[8];
  encode(count, bytes);
  stateful_app_string_t key = literal("count");
  stateful_app_list_u8_t value = {bytes, sizeof bytes};
  trellis_app_kv_error_t kv_err;
  if (!trellis_app_kv_set(&key, &value, &kv_err)) {
    TU_HOST_ERROR(*b, kv_err);
    return false;
  }
  tu_buf text = {0};
  tu_u64(&text, count);
  stateful_app_string_t topic = literal("counter/value");
  stateful_app_list_u8_t payload = {text.ptr, text.len};
  trellis_app_pubsub_error_t pub_err;
  bool published = trellis_app_pubsub_publish(&topic, &payload, &pub_err);
  free(text.ptr);
  if (!published) {
    TU_HOST_ERROR(*b, pub_err);
    return false;
  }
  tu_buf msg = {0};
  tu_str(&msg, "count ");
  tu_u64(&msg, count);
  log_at(TRELLIS_APP_LOG_LOG_LEVEL_DEBUG, &msg);
  return true;
}

bool exports_stateful_app_handle(stateful_app_event_t *event, stateful_app_string_t *err) {
  tu_buf b = {0};
  bool ok = true;
  if (!started) {
    tu_str(&b, "the app has not started");
    ok = false;
  } else if (event->tag == TRELLIS_APP_EVENTS_EVENT_TIMER) {
    ok = on_timer(&b);
  }
  stateful_app_event_free(event);
  if (!ok) TU_INTO_STRING(err, b);
  return ok;
}

/* Called on the old version just before a swap: the ticks since boot. */
bool exports_trellis_app_state_save(stateful_app_list_u8_t *ret) {
  if (!started) return false;
  ret->ptr = malloc(8);
  if (!ret->ptr) abort();
  ret->len = 8;
  encode(ticks_since_boot, ret->ptr);
  return true;
}

/* Called on the new version before `start`, with what the old one saved. */
bool exports_trellis_app_state_restore(stateful_app_list_u8_t *data, stateful_app_string_t *err) {
  (void)err;
  if (restored) stateful_app_list_u8_free(&restored_data);
  restored_data = *data;
  restored = true;
  return true;
}
