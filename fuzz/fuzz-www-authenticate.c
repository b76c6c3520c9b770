/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for what registries and token servers send back:
 * WWW-Authenticate lines (one per input line), the token requests built
 * from them, token responses (the whole input as JSON), and the URL
 * sanitiser of the debug logs. Nothing may crash, leak or pass a limit;
 * challenges stay sorted; sanitising is idempotent.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/macro.h"
#include "registry/auth.h"
#include "registry/redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_sanitize(const char *url)
{
        _cleanup_free_ char *once = kiln_registry_url_sanitize(url);
        _cleanup_free_ char *twice = kiln_registry_url_sanitize(once);

        if (!streq(once, twice))
                abort();
}

/* The secret is never in a GET URL, unless the server put it there. */
static void bearer(const struct kiln_registry_challenge *c, bool input_has_secret)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_registry_token_options o = { 0 };
        char *extra[] = { (char *) "repository:fuzz/repo:pull" };

        if (kiln_registry_token_options_init(&o, c, extra, 1, "user", "SECRETVALUE", &err) < 0) {
                if (!err || o.realm)
                        abort();
                return;
        }
        {
                _cleanup_free_ char *url = kiln_registry_token_get_url(&o);
                _cleanup_free_ char *body = kiln_registry_token_post_body(&o, "buildkit-client");
                _cleanup_free_ char *safe = NULL;

                if (url) {
                        if (!input_has_secret && strstr(url, "SECRETVALUE"))
                                abort();
                        check_sanitize(url);
                        safe = kiln_registry_url_sanitize(url);
                }
                if (body && !strstr(body, "password=SECRETVALUE"))
                        abort();
        }
        o.username[0] = 0;
        (void) kiln_registry_token_should_post(&o, 405);
        kiln_registry_token_options_release(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *p = (const char *) data, *end = p + size;
        struct kiln_registry_challenges c = { 0 };
        struct kiln_registry_token t = { 0 };
        _cleanup_free_ char *s = kiln_xstrndup(p, size);

        while (p <= end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t len = (size_t) ((nl ? nl : end) - p);
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                if (kiln_registry_challenges_parse(&c, p, len, &err) < 0 && !err)
                        abort();
                p = (nl ? nl : end) + 1;
        }
        if (c.n > 16)
                abort();
        for (size_t i = 0; i < c.n; i++) {
                if (i > 0 && c.items[i - 1].scheme > c.items[i].scheme)
                        abort();
                if (c.items[i].n_params > 32)
                        abort();
                for (size_t k = 0; k < c.items[i].n_params; k++)
                        if (!c.items[i].params[k].key[0] || !c.items[i].params[k].value)
                                abort();
                if (c.items[i].scheme == KILN_REGISTRY_AUTH_BEARER)
                        bearer(&c.items[i], memmem(data, size, "SECRETVALUE", 11) != NULL);
        }
        (void) kiln_registry_challenges_select(&c, true);
        kiln_registry_challenges_release(&c);

        for (int kind = 0; kind < 2; kind++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                if (kiln_registry_token_response_parse((const char *) data, size, kind, &t, &err) >=
                    0) {
                        if (!t.token || !t.token[0] || t.expires_in == 0)
                                abort();
                        (void) kiln_registry_token_expiry(&t, 0);
                        kiln_registry_token_release(&t);
                } else if (!err)
                        abort();
        }

        check_sanitize(s);
        {
                char *colon = strchr(s, ':');

                if (colon) {
                        *colon = 0;
                        free(kiln_registry_header_log_value(s, colon + 1, false));
                        free(kiln_registry_header_log_value(s, colon + 1, true));
                }
        }
        return 0;
}
