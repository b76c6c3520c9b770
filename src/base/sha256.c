/* SPDX-License-Identifier: Apache-2.0 */
#include <openssl/evp.h>

#include "macro.h"
#include "sha256.h"

struct kiln_sha256 {
        EVP_MD_CTX *ctx;
};

struct kiln_sha256 *kiln_sha256_new(void)
{
        struct kiln_sha256 *s = kiln_xcalloc(1, sizeof(*s));

        s->ctx = EVP_MD_CTX_new();
        if (!s->ctx || EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1)
                return kiln_sha256_free(s);
        return s;
}

void kiln_sha256_update(struct kiln_sha256 *s, const void *p, size_t n)
{
        /* Cannot fail for an initialised SHA-256 context. */
        (void) EVP_DigestUpdate(s->ctx, p, n);
}

static void to_hex(const unsigned char *d, size_t n, char *hex)
{
        static const char digits[] = "0123456789abcdef";
        size_t i;

        for (i = 0; i < n; i++) {
                hex[2 * i] = digits[d[i] >> 4];
                hex[2 * i + 1] = digits[d[i] & 0xf];
        }
        hex[2 * n] = '\0';
}

void kiln_sha256_final_hex(struct kiln_sha256 *s, char hex[static KILN_SHA256_HEX_LEN + 1])
{
        unsigned char md[KILN_SHA256_LEN];
        unsigned int len = 0;

        (void) EVP_DigestFinal_ex(s->ctx, md, &len);
        to_hex(md, KILN_SHA256_LEN, hex);
}

struct kiln_sha256 *kiln_sha256_free(struct kiln_sha256 *s)
{
        if (s) {
                EVP_MD_CTX_free(s->ctx);
                free(s);
        }
        return NULL;
}

void kiln_sha256_hex(const void *p, size_t n, char hex[static KILN_SHA256_HEX_LEN + 1])
{
        unsigned char md[KILN_SHA256_LEN];
        unsigned int len = 0;

        (void) EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
        to_hex(md, KILN_SHA256_LEN, hex);
}
