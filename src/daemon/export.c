/* SPDX-License-Identifier: Apache-2.0 */
#include "daemon-internal.h"

bool kiln_daemon_export_path_match(const char *url)
{
        (void) url;
        return false;
}

enum MHD_Result kiln_daemon_handle_export(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                          struct MHD_Connection *conn, const char *method,
                                          const char *url)
{
        (void) d;
        (void) req;
        return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                                         "not implemented");
}
