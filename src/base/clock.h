/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The two clocks kiln reads: a monotonic one for deadlines and durations,
 * the wall clock for times that are recorded or shown; and the calendar
 * arithmetic of date parsers. Thread safe.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds. */
static inline int64_t kiln_mono_ms(void)
{
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_REALTIME in nanoseconds since the Unix epoch. */
static inline int64_t kiln_realtime_ns(void)
{
        struct timespec ts;

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The n decimal digits at s as a number (n small enough for an int): false
 * when one of them is not a digit. For the fixed-width fields of dates. */
static inline bool kiln_parse_digits(const char *s, size_t n, int *ret)
{
        int v = 0;

        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (s[i] - '0');
        }
        *ret = v;
        return true;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; m 1-12), negative
 * before it. */
static inline int64_t kiln_days_from_civil(int64_t y, int m, int d)
{
        int64_t era, yoe, doy, doe;

        y -= m <= 2;
        era = (y >= 0 ? y : y - 399) / 400;
        yoe = y - era * 400;
        doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

/* CLOCK_MONOTONIC ms milliseconds from now, as pthread_cond_timedwait takes
 * it for a condition variable made with that clock. */
static inline struct timespec kiln_mono_deadline(int64_t ms)
{
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t) (ms / 1000);
        ts.tv_nsec += (long) (ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        return ts;
}
