/* SPDX-License-Identifier: Apache-2.0 */
#include "base/goquote.h"
#include "base/unicode.h"
#include "kiln-test.h"

TEST(letters_and_digits_of_any_script)
{
        /* ASCII, Latin-1, Greek, CJK, a letter new in Unicode 15.0 (CJK
         * extension H), an Lm and an Lo */
        ASSERT_TRUE(kiln_unicode_is_letter('a') && kiln_unicode_is_letter('Z'));
        ASSERT_TRUE(kiln_unicode_is_letter(0xe9) && kiln_unicode_is_letter(0x3a9));
        ASSERT_TRUE(kiln_unicode_is_letter(0x4e2d) && kiln_unicode_is_letter(0x31350));
        ASSERT_TRUE(kiln_unicode_is_letter(0x2b0) && kiln_unicode_is_letter(0x5d0));
        /* not letters: digits, '_', marks, symbols, Nl numbers, the end */
        ASSERT_TRUE(!kiln_unicode_is_letter('1') && !kiln_unicode_is_letter('_'));
        ASSERT_TRUE(!kiln_unicode_is_letter(0x301) && !kiln_unicode_is_letter(0xd7));
        ASSERT_TRUE(!kiln_unicode_is_letter(0x2160) && !kiln_unicode_is_letter(0x10ffff));
        ASSERT_TRUE(!kiln_unicode_is_letter(UINT32_MAX));

        /* Nd only: Arabic-Indic, fullwidth, Kawi (new in 15.0) */
        ASSERT_TRUE(kiln_unicode_is_digit('0') && kiln_unicode_is_digit('9'));
        ASSERT_TRUE(kiln_unicode_is_digit(0x663) && kiln_unicode_is_digit(0xff19));
        ASSERT_TRUE(kiln_unicode_is_digit(0x11f50));
        /* superscripts (No) and Roman numerals (Nl) are not digits */
        ASSERT_TRUE(!kiln_unicode_is_digit(0xb2) && !kiln_unicode_is_digit(0x2160));
        ASSERT_TRUE(!kiln_unicode_is_digit('a') && !kiln_unicode_is_digit(UINT32_MAX));
        return 0;
}

TEST(space_is_gos)
{
        static const uint32_t spaces[] = { '\t',   '\n',   '\v',   '\f',   '\r',   ' ',
                                           0x85,   0xa0,   0x1680, 0x2000, 0x200a, 0x2028,
                                           0x2029, 0x202f, 0x205f, 0x3000 };

        for (size_t i = 0; i < ELEMENTSOF(spaces); i++)
                ASSERT_TRUE(kiln_unicode_is_space(spaces[i]));
        /* zero width space, BOM, U+180E (no longer White_Space), controls */
        ASSERT_TRUE(!kiln_unicode_is_space(0x200b) && !kiln_unicode_is_space(0xfeff));
        ASSERT_TRUE(!kiln_unicode_is_space(0x180e) && !kiln_unicode_is_space(0x1c));
        ASSERT_TRUE(!kiln_unicode_is_space(0) && !kiln_unicode_is_space(UINT32_MAX));
        return 0;
}

TEST(to_lower_is_the_simple_mapping)
{
        ASSERT_EQ_INT(kiln_unicode_to_lower('A'), 'a');
        ASSERT_EQ_INT(kiln_unicode_to_lower('z'), 'z');
        ASSERT_EQ_INT(kiln_unicode_to_lower('@'), '@');
        ASSERT_EQ_INT(kiln_unicode_to_lower(0xdc), 0xfc);   /* Ü */
        ASSERT_EQ_INT(kiln_unicode_to_lower(0xd7), 0xd7);   /* × sits between capitals */
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x100), 0x101); /* stride 2 ranges */
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x101), 0x101);
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x130), 'i');  /* İ: one rune, not i + U+0307 */
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x212a), 'k'); /* KELVIN SIGN */
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x1e9e), 0xdf);
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x10400), 0x10428);
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x1e921), 0x1e943);
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x3a3), 0x3c3);
        ASSERT_EQ_INT(kiln_unicode_to_lower(0x10ffff), 0x10ffff);
        ASSERT_TRUE(kiln_unicode_to_lower(UINT32_MAX) == UINT32_MAX);
        return 0;
}

TEST(utf8_like_go)
{
        char out[4];
        size_t w;

        /* DecodeRune: invalid or truncated input is U+FFFD, one byte */
        ASSERT_EQ_INT(kiln_utf8_decode_rune("\xc3\xa9x", 3, &w), 0xe9);
        ASSERT_EQ_INT(w, 2);
        ASSERT_EQ_INT(kiln_utf8_decode_rune("\xef\xbf\xbd", 3, &w), 0xfffd);
        ASSERT_EQ_INT(w, 3);
        ASSERT_EQ_INT(kiln_utf8_decode_rune("\xe2\x84", 2, &w), 0xfffd);
        ASSERT_EQ_INT(w, 1);
        ASSERT_EQ_INT(kiln_utf8_decode_rune("\xc0\x80", 2, &w), 0xfffd); /* overlong */
        ASSERT_EQ_INT(w, 1);
        ASSERT_EQ_INT(kiln_utf8_decode_rune("\xed\xa0\x80", 3, &w), 0xfffd); /* surrogate */
        ASSERT_EQ_INT(w, 1);
        ASSERT_EQ_INT(kiln_utf8_decode_rune("\xf4\x90\x80\x80", 4, &w), 0xfffd); /* > U+10FFFF */
        ASSERT_EQ_INT(w, 1);
        ASSERT_EQ_INT(kiln_utf8_decode_rune("", 0, &w), 0xfffd);
        ASSERT_EQ_INT(w, 0);

        /* EncodeRune: what cannot be encoded becomes U+FFFD */
        ASSERT_EQ_INT(kiln_utf8_encode('a', out), 1);
        ASSERT_EQ_INT(kiln_utf8_encode(0x20ac, out), 3);
        ASSERT_TRUE(memcmp(out, "\xe2\x82\xac", 3) == 0);
        ASSERT_EQ_INT(kiln_utf8_encode(0x1f600, out), 4);
        ASSERT_TRUE(memcmp(out, "\xf0\x9f\x98\x80", 4) == 0);
        ASSERT_EQ_INT(kiln_utf8_encode(0xd800, out), 3);
        ASSERT_TRUE(memcmp(out, "\xef\xbf\xbd", 3) == 0);
        ASSERT_EQ_INT(kiln_utf8_encode(UINT32_MAX, out), 3);
        ASSERT_TRUE(memcmp(out, "\xef\xbf\xbd", 3) == 0);
        return 0;
}
