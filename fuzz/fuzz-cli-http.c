/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the answer parser of kiln's HTTP client
 * (src/cli/http.c): what a daemon, or anything listening where kiln
 * expects one, sends back. The first byte picks how the answer arrives
 * (the size of the pieces it is fed in, and whether the connection ends
 * after it); the rest is the answer. Every input must be read or refused
 * with a message, whatever the split: the same bytes must give the same
 * outcome in any pieces. No crashes, leaks or undefined behaviour.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/macro.h"
#include "cli/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse(const char *p, size_t n, size_t piece, bool ended,
                 struct kiln_cli_http_response *resp)
{
        struct kiln_error *e = NULL;
        int r = kiln_cli_http_parse_answer(p, n, piece, ended, resp, &e);

        if (r < 0 && (!e || !kiln_error_message(e)[0]))
                abort(); /* a refusal always says why */
        kiln_error_free(e);
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct kiln_cli_http_response a = { 0 }, b = { 0 };
        size_t piece;
        bool ended;
        int ra, rb;

        if (size < 1)
                return 0;
        piece = (size_t) (data[0] & 0x7f) + 1;
        ended = data[0] & 0x80;
        ra = parse((const char *) data + 1, size - 1, 0, ended, &a);
        rb = parse((const char *) data + 1, size - 1, piece, ended, &b);
        if (ra != rb)
                abort();
        if (ra == 0 && (a.status != b.status || a.body.len != b.body.len ||
                        (a.body.len && memcmp(a.body.data, b.body.data, a.body.len) != 0)))
                abort();
        kiln_cli_http_response_release(&a);
        kiln_cli_http_response_release(&b);
        return 0;
}
