/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The remote driver: a kilnd somebody else runs, at a unix:// or tcp://
 * endpoint. kiln only talks to it: it is "running" when it answers and
 * "inactive" otherwise, and stopping it is not kiln's business (buildx's
 * remote driver behaves the same).
 */
#include <time.h>

#include "builder.h"
#include "http.h"

/* One attempt of a boot; the boot retries while nothing listens yet. */
#define PROBE_TIMEOUT_MS 5000u

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static int probe(const struct kiln_cli_builder *b, uint64_t timeout_ms, json_t **ret,
                 struct kiln_error **err)
{
        struct kiln_cli_http_target t;

        kiln_cli_builder_http_target(b, &t);
        return kiln_cli_http_get_json(&t, "/v1/info", timeout_ms, ret, err);
}

static void remote_status(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                          struct kiln_cli_status *ret)
{
        json_t *pid;

        *ret = (struct kiln_cli_status){ .kind = KILN_CLI_STATUS_INACTIVE };
        if (probe(b, timeout_ms, &ret->info, &ret->err) < 0)
                return;
        ret->kind = KILN_CLI_STATUS_RUNNING;
        pid = json_object_get(ret->info, "pid");
        ret->pid = json_is_integer(pid) ? (pid_t) json_integer_value(pid) : 0;
}

static int remote_boot(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                       struct kiln_cli_status *ret, struct kiln_error **err)
{
        uint64_t deadline = now_ms() + timeout_ms;

        for (;;) {
                uint64_t left = deadline > now_ms() ? deadline - now_ms() : 1;
                struct timespec pause = { .tv_nsec = 100 * 1000000L };
                int r;

                kiln_cli_status_release(ret);
                remote_status(b, left < PROBE_TIMEOUT_MS ? left : PROBE_TIMEOUT_MS, ret);
                if (ret->kind == KILN_CLI_STATUS_RUNNING)
                        return 0;
                r = ret->err ? ret->err->code : -EIO;
                /* Only "nobody listens yet" is worth waiting for (a daemon
                 * being started); a refused certificate will not change. */
                if ((r != -ECONNREFUSED && r != -EHOSTUNREACH) || now_ms() >= deadline) {
                        *err = kiln_error_free(*err);
                        *err = TAKE_PTR(ret->err);
                        kiln_cli_status_release(ret);
                        return r;
                }
                (void) nanosleep(&pause, NULL);
        }
}

static int remote_stop(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                       struct kiln_error **err)
{
        return 0;
}

const struct kiln_cli_driver kiln_cli_driver_remote = {
        .name = "remote",
        .status = remote_status,
        .boot = remote_boot,
        .stop = remote_stop,
};
