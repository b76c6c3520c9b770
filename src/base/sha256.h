/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* SHA-256 over OpenSSL EVP, one-shot and streaming. Thread safe per context. */

#include <stddef.h>
#include <stdint.h>

#define KILN_SHA256_LEN     32
#define KILN_SHA256_HEX_LEN 64

struct kiln_sha256;

/* Returns NULL only on allocation failure inside OpenSSL. */
struct kiln_sha256 *kiln_sha256_new(void);
void kiln_sha256_update(struct kiln_sha256 *s, const void *p, size_t n);
/* Writes the lowercase hex digest and a NUL into hex[KILN_SHA256_HEX_LEN + 1]. */
void kiln_sha256_final_hex(struct kiln_sha256 *s, char hex[static KILN_SHA256_HEX_LEN + 1]);
struct kiln_sha256 *kiln_sha256_free(struct kiln_sha256 *s);

/* One-shot: hex digest of p[0..n). */
void kiln_sha256_hex(const void *p, size_t n, char hex[static KILN_SHA256_HEX_LEN + 1]);
