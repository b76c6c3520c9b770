/* SPDX-License-Identifier: Apache-2.0 */
#include "base/sha256.h"
#include "base/macro.h"
#include "kiln-test.h"

TEST(known_vectors)
{
        char hex[KILN_SHA256_HEX_LEN + 1];

        kiln_sha256_hex("", 0, hex);
        ASSERT_STREQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        kiln_sha256_hex("abc", 3, hex);
        ASSERT_STREQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        return 0;
}

TEST(streaming_equals_one_shot)
{
        static const char text[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        char a[KILN_SHA256_HEX_LEN + 1], b[KILN_SHA256_HEX_LEN + 1];
        struct kiln_sha256 *s = kiln_sha256_new();

        ASSERT_TRUE(s);
        for (size_t i = 0; i < sizeof(text) - 1; i += 5)
                kiln_sha256_update(s, text + i,
                                   (sizeof(text) - 1 - i < 5 ? sizeof(text) - 1 - i : 5));
        kiln_sha256_final_hex(s, a);
        kiln_sha256_free(s);
        kiln_sha256_hex(text, sizeof(text) - 1, b);
        ASSERT_STREQ(a, b);
        ASSERT_STREQ(a, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        return 0;
}
