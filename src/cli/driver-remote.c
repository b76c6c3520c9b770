/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The remote driver: a kilnd somebody else runs, at a unix:// or tcp://
 * endpoint. kiln only talks to it: it is "running" when it answers and
 * "inactive" otherwise, and stopping it is not kiln's business (buildx's
 * remote driver behaves the same).
 */
#include "builder.h"
#include "cli.h"

/* One attempt of a boot; the boot retries while nothing listens yet. */
#define PROBE_TIMEOUT_MS 5000u

static void remote_status(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                          struct kiln_cli_status *ret)
{
        json_t *pid;

        *ret = (struct kiln_cli_status){ .kind = KILN_CLI_STATUS_INACTIVE };
        if (kiln_cli_builder_probe(b, timeout_ms, &ret->info, &ret->err) < 0)
                return;
        ret->kind = KILN_CLI_STATUS_RUNNING;
        pid = json_object_get(ret->info, "pid");
        ret->pid = json_is_integer(pid) ? (pid_t) json_integer_value(pid) : 0;
}

static int remote_boot(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                       struct kiln_cli_status *ret, struct kiln_error **err)
{
        uint64_t deadline = kiln_cli_now_ms() + timeout_ms;

        for (;;) {
                uint64_t left = deadline > kiln_cli_now_ms() ? deadline - kiln_cli_now_ms() : 1;
                int r;

                kiln_cli_status_release(ret);
                remote_status(b, left < PROBE_TIMEOUT_MS ? left : PROBE_TIMEOUT_MS, ret);
                if (ret->kind == KILN_CLI_STATUS_RUNNING)
                        return 0;
                r = ret->err ? ret->err->code : -EIO;
                /* Only "nobody listens yet" is worth waiting for (a daemon
                 * being started); a refused certificate will not change. */
                if ((r != -ECONNREFUSED && r != -EHOSTUNREACH) || kiln_cli_now_ms() >= deadline) {
                        *err = kiln_error_free(*err);
                        *err = TAKE_PTR(ret->err);
                        kiln_cli_status_release(ret);
                        return r;
                }
                kiln_cli_sleep_ms(100);
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
