/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Functions that invite overflows or silent misparses. Each is redefined to
 * an undeclared name that says why, so a use fails to compile legibly.
 * Included at the end of macro.h, after the system headers.
 */

#define BANNED(func) sorry_##func##_is_banned_in_kiln

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef strncat
#define strncat(x, y, n) BANNED(strncat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef atoi
#define atoi(x) BANNED(atoi)
#undef atol
#define atol(x) BANNED(atol)
#undef gets
#define gets(x) BANNED(gets)
