/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for image references and the host/URL code they feed:
 * any string must parse or fail with an "invalid reference" error; a
 * parsed reference's canonical and familiar forms must read back to the
 * same reference; mirror entries and URL building must hold their limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/macro.h"
#include "registry/hosts.h"
#include "content/ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *reparse_canonical(const char *s)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *r = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        if (kiln_content_ref_parse(s, &r, &err) < 0)
                abort();
        return kiln_content_ref_canonical(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_free_ char *s = kiln_xstrndup((const char *) data, size);
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL, *derr = NULL;
        _cleanup_free_ char *mhost = NULL, *prefix = NULL;
        int r;

        (void) kiln_registry_host_is_loopback(s);
        (void) kiln_content_digest_validate(s, &derr);
        kiln_registry_mirror_split(s, &mhost, &prefix);
        if (!mhost || !prefix)
                abort();

        r = kiln_content_ref_parse(s, &ref, &err);
        if (r < 0) {
                if (r != -EINVAL || !err || !strstr(kiln_error_message(err), "invalid reference"))
                        abort();
                return 0;
        }
        if (!ref->domain || !ref->path || (!ref->tag && !ref->digest))
                abort();
        if (strlen(ref->path) > 255 || (ref->tag && strlen(ref->tag) > 128))
                abort();

        {
                _cleanup_free_ char *canonical = kiln_content_ref_canonical(ref);
                _cleanup_free_ char *familiar = kiln_content_ref_familiar(ref);
                _cleanup_free_ char *name = kiln_content_ref_name(ref);
                _cleanup_free_ char *again = reparse_canonical(canonical);
                _cleanup_free_ char *from_familiar = reparse_canonical(familiar);
                _cleanup_free_ char *url = NULL;
                _cleanup_free_ char *v2 = kiln_xasprintf("/v2%s%s", *prefix ? "/" : "", prefix);
                struct kiln_registry_host h = { .scheme = (char *) "https",
                                                .host = mhost,
                                                .path_prefix = v2 };

                if (!streq(canonical, again) || !streq(canonical, from_familiar))
                        abort();
                if (!startswith(canonical, name))
                        abort();
                url = kiln_registry_host_url(&h, ref, "manifests", kiln_content_ref_object(ref));
                if (url && !startswith(url, "https://"))
                        abort();
        }
        return 0;
}
