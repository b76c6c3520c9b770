/* SPDX-License-Identifier: Apache-2.0 */
#include "kiln-test.h"

TEST(placeholder)
{
        return KILN_TEST_SKIP;
}
