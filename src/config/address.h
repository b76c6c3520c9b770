/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The addresses kilnd listens on and kiln connects to: "unix://PATH" and
 * "tcp://HOST:PORT" ([grpc] address, --addr, a remote builder's endpoint).
 * One parser for the daemon, the client and the configuration check, so a
 * value kilnd --validate accepts is one kilnd can listen on.
 */

#include "base/error.h"

enum kiln_config_address_kind {
        KILN_CONFIG_ADDRESS_UNIX,
        KILN_CONFIG_ADDRESS_TCP,
        _KILN_CONFIG_ADDRESS_KIND_MAX,
        _KILN_CONFIG_ADDRESS_KIND_INVALID = -EINVAL,
};

struct kiln_config_address {
        enum kiln_config_address_kind kind;
        char *path; /* unix: the socket's path (fits sockaddr_un.sun_path) */
        char *host; /* tcp: "" for every address; brackets of IPv6 removed */
        char *port; /* tcp: decimal, 0-65535 */
};

/* Parses s into *ret (release with kiln_config_address_release). fd:// and
 * npipe:// (buildkitd's) are refused as unsupported by kiln. On failure
 * returns -EINVAL, -ENAMETOOLONG or -EOPNOTSUPP and sets *err to
 * "invalid address '<s>': <why>"; *ret is untouched. */
int kiln_config_address_parse(const char *s, struct kiln_config_address *ret,
                              struct kiln_error **err);
void kiln_config_address_release(struct kiln_config_address *a);
