/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/un.h>

#include "address.h"

void kiln_config_address_release(struct kiln_config_address *a)
{
        free(a->path);
        free(a->host);
        free(a->port);
        *a = (struct kiln_config_address){ .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID };
}

static int parse_tcp(const char *s, const char *hostport, struct kiln_config_address *ret,
                     struct kiln_error **err)
{
        const char *colon, *host = hostport;
        size_t host_len;
        char *end;
        long port;

        if (hostport[0] == '[') {
                const char *close = strchr(hostport, ']');

                if (!close || close[1] != ':')
                        return kiln_error_set(err, -EINVAL,
                                              "invalid address '%s': expected tcp://[IPV6]:PORT",
                                              s);
                host = hostport + 1;
                host_len = (size_t) (close - host);
                colon = close + 1;
        } else {
                colon = strrchr(hostport, ':');
                if (!colon)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid address '%s': expected tcp://HOST:PORT", s);
                host_len = (size_t) (colon - hostport);
                if (memchr(hostport, ':', host_len))
                        return kiln_error_set(
                                err, -EINVAL,
                                "invalid address '%s': an IPv6 host must be in brackets", s);
        }

        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535 ||
            colon[1] == '-' || colon[1] == '+')
                return kiln_error_set(err, -EINVAL, "invalid address '%s': bad port '%s'", s,
                                      colon + 1);

        ret->kind = KILN_CONFIG_ADDRESS_TCP;
        ret->host = kiln_xstrndup(host, host_len);
        ret->port = kiln_xstrdup(colon + 1);
        return 0;
}

int kiln_config_address_parse(const char *s, struct kiln_config_address *ret,
                              struct kiln_error **err)
{
        struct kiln_config_address a = { .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID };
        const char *sep = strstr(s, "://"), *rest;
        int r;

        if (!sep)
                return kiln_error_set(err, -EINVAL,
                                      "invalid address '%s': expected unix://PATH or "
                                      "tcp://HOST:PORT",
                                      s);
        rest = sep + 3;

        if (startswith(s, "unix://")) {
                struct sockaddr_un sun;

                if (rest[0] == '\0')
                        return kiln_error_set(err, -EINVAL, "invalid address '%s': empty path", s);
                if (strlen(rest) >= sizeof(sun.sun_path))
                        return kiln_error_set(err, -ENAMETOOLONG,
                                              "invalid address '%s': socket path longer than "
                                              "%zu bytes",
                                              s, sizeof(sun.sun_path) - 1);
                a.kind = KILN_CONFIG_ADDRESS_UNIX;
                a.path = kiln_xstrdup(rest);
        } else if (startswith(s, "tcp://")) {
                r = parse_tcp(s, rest, &a, err);
                if (r < 0)
                        return r;
        } else if (startswith(s, "fd://") || startswith(s, "npipe://"))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "invalid address '%s': scheme not supported by kiln", s);
        else
                return kiln_error_set(err, -EINVAL,
                                      "invalid address '%s': unknown scheme (use unix:// or "
                                      "tcp://)",
                                      s);

        *ret = a;
        return 0;
}
