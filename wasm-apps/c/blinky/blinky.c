/*
 * c-blinky: toggles a GPIO output on a timer; the C twin of
 * wasm-apps/examples/blinky (same config, same behaviour, same log lines).
 *
 * Config: `line` (default 17), `period-ms` (default 500).
 * Build: `make apps` (scripts/build-c-app.sh, then `trellis app pack`), into
 * build/lang-apps/c-blinky.wasm. World: `app` (the header included below).
 */
#include "app.h"
#include "trellis_util.h"

static bool started;
static uint32_t line;
static trellis_app_types_level_t level;
static uint64_t toggles;

static void log_at(trellis_app_log_log_level_t at, tu_buf *b) {
  app_string_t message = {b->ptr, b->len};
  trellis_app_log_log(at, &message);
  free(b->ptr);
}

/* The config value `key` as a u32 (`fallback` when absent); false with the
 * SDK's message in `b` when it does not parse. */
static bool config_u32(app_list_tuple2_string_string_t *config, const char *key, uint32_t fallback,
                       uint32_t *out, tu_buf *b) {
  app_string_t *value = NULL;
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

static bool start(app_list_tuple2_string_string_t *config, tu_buf *b) {
  uint32_t period;
  if (!config_u32(config, "line", 17, &line, b) || !config_u32(config, "period-ms", 500, &period, b)) return false;
  trellis_app_gpio_error_t gpio_err;
  if (!trellis_app_gpio_claim_output(line, TRELLIS_APP_TYPES_LEVEL_LOW, &gpio_err)) {
    TU_HOST_ERROR(*b, gpio_err);
    return false;
  }
  trellis_app_timers_timer_id_t id;
  app_string_t timer_err;
  if (!trellis_app_timers_set_interval(period, &id, &timer_err)) {
    tu_bytes(b, timer_err.ptr, timer_err.len);
    free(timer_err.ptr);
    return false;
  }
  tu_buf msg = {0};
  tu_str(&msg, "blinking GPIO ");
  tu_u64(&msg, line);
  tu_str(&msg, " every ");
  tu_u64(&msg, period);
  tu_str(&msg, " ms");
  log_at(TRELLIS_APP_LOG_LOG_LEVEL_INFO, &msg);
  level = TRELLIS_APP_TYPES_LEVEL_LOW;
  toggles = 0;
  started = true;
  return true;
}

bool exports_app_start(app_list_tuple2_string_string_t *config, app_string_t *err) {
  tu_buf b = {0};
  bool ok = start(config, &b);
  app_list_tuple2_string_string_free(config);
  if (!ok) TU_INTO_STRING(err, b);
  return ok;
}

static bool on_timer(tu_buf *b) {
  level = level == TRELLIS_APP_TYPES_LEVEL_LOW ? TRELLIS_APP_TYPES_LEVEL_HIGH : TRELLIS_APP_TYPES_LEVEL_LOW;
  trellis_app_gpio_error_t gpio_err;
  if (!trellis_app_gpio_write(line, level, &gpio_err)) {
    TU_HOST_ERROR(*b, gpio_err);
    return false;
  }
  toggles++;
  tu_buf msg = {0};
  tu_str(&msg, "GPIO ");
  tu_u64(&msg, line);
  tu_str(&msg, level == TRELLIS_APP_TYPES_LEVEL_HIGH ? " High (toggle " : " Low (toggle ");
  tu_u64(&msg, toggles);
  tu_str(&msg, ")");
  log_at(TRELLIS_APP_LOG_LOG_LEVEL_DEBUG, &msg);
  return true;
}

bool exports_app_handle(app_event_t *event, app_string_t *err) {
  tu_buf b = {0};
  bool ok = true;
  if (!started) {
    tu_str(&b, "the app has not started");
    ok = false;
  } else if (event->tag == TRELLIS_APP_EVENTS_EVENT_TIMER) {
    ok = on_timer(&b);
  } else if (event->tag == TRELLIS_APP_EVENTS_EVENT_SHUTDOWN) {
    trellis_app_gpio_error_t gpio_err;
    if (!trellis_app_gpio_write(line, TRELLIS_APP_TYPES_LEVEL_LOW, &gpio_err)) trellis_app_gpio_error_free(&gpio_err);
  }
  app_event_free(event);
  if (!ok) TU_INTO_STRING(err, b);
  return ok;
}
