/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * libarchive, loaded when first used. Most kiln commands never touch an
 * archive (a cached build sends no tar), and linking libarchive (with
 * libxml2 and ICU behind it) costs every kiln process about 2 ms of start.
 * Include this header instead of <archive.h> and <archive_entry.h>: the
 * functions below then go through a table filled by dlopen on the first
 * call (thread safe). When the library cannot be loaded, kiln stops with
 * a message naming it (scripts/install-deps installs it).
 */

#include <archive.h>
#include <archive_entry.h>

/* The soname kiln was built against. */
#define KILN_CLI_LIBARCHIVE "libarchive.so.13"

#define KILN_CLI_ARCHIVE_FUNCS(X)            \
        X(archive_entry_filetype)            \
        X(archive_entry_free)                \
        X(archive_entry_hardlink)            \
        X(archive_entry_new)                 \
        X(archive_entry_pathname)            \
        X(archive_entry_set_filetype)        \
        X(archive_entry_set_gid)             \
        X(archive_entry_set_hardlink)        \
        X(archive_entry_set_mtime)           \
        X(archive_entry_set_pathname)        \
        X(archive_entry_set_perm)            \
        X(archive_entry_set_size)            \
        X(archive_entry_set_uid)             \
        X(archive_error_string)              \
        X(archive_read_data_block)           \
        X(archive_read_free)                 \
        X(archive_read_new)                  \
        X(archive_read_next_header)          \
        X(archive_read_open)                 \
        X(archive_read_open_fd)              \
        X(archive_read_support_filter_all)   \
        X(archive_read_support_format_tar)   \
        X(archive_write_add_filter_none)     \
        X(archive_write_close)               \
        X(archive_write_data)                \
        X(archive_write_data_block)          \
        X(archive_write_disk_new)            \
        X(archive_write_disk_set_options)    \
        X(archive_write_finish_entry)        \
        X(archive_write_free)                \
        X(archive_write_header)              \
        X(archive_write_new)                 \
        X(archive_write_open2)               \
        X(archive_write_set_bytes_per_block) \
        X(archive_write_set_format_pax_restricted)

struct kiln_cli_archive_api {
#define X(f) __typeof__(&f) f;
        KILN_CLI_ARCHIVE_FUNCS(X)
#undef X
};

const struct kiln_cli_archive_api *kiln_cli_archive(void);

#ifndef KILN_CLI_ARCHIVE_NO_MACROS
#define archive_entry_filetype            (kiln_cli_archive()->archive_entry_filetype)
#define archive_entry_free                (kiln_cli_archive()->archive_entry_free)
#define archive_entry_hardlink            (kiln_cli_archive()->archive_entry_hardlink)
#define archive_entry_new                 (kiln_cli_archive()->archive_entry_new)
#define archive_entry_pathname            (kiln_cli_archive()->archive_entry_pathname)
#define archive_entry_set_filetype        (kiln_cli_archive()->archive_entry_set_filetype)
#define archive_entry_set_gid             (kiln_cli_archive()->archive_entry_set_gid)
#define archive_entry_set_hardlink        (kiln_cli_archive()->archive_entry_set_hardlink)
#define archive_entry_set_mtime           (kiln_cli_archive()->archive_entry_set_mtime)
#define archive_entry_set_pathname        (kiln_cli_archive()->archive_entry_set_pathname)
#define archive_entry_set_perm            (kiln_cli_archive()->archive_entry_set_perm)
#define archive_entry_set_size            (kiln_cli_archive()->archive_entry_set_size)
#define archive_entry_set_uid             (kiln_cli_archive()->archive_entry_set_uid)
#define archive_error_string              (kiln_cli_archive()->archive_error_string)
#define archive_read_data_block           (kiln_cli_archive()->archive_read_data_block)
#define archive_read_free                 (kiln_cli_archive()->archive_read_free)
#define archive_read_new                  (kiln_cli_archive()->archive_read_new)
#define archive_read_next_header          (kiln_cli_archive()->archive_read_next_header)
#define archive_read_open                 (kiln_cli_archive()->archive_read_open)
#define archive_read_open_fd              (kiln_cli_archive()->archive_read_open_fd)
#define archive_read_support_filter_all   (kiln_cli_archive()->archive_read_support_filter_all)
#define archive_read_support_format_tar   (kiln_cli_archive()->archive_read_support_format_tar)
#define archive_write_add_filter_none     (kiln_cli_archive()->archive_write_add_filter_none)
#define archive_write_close               (kiln_cli_archive()->archive_write_close)
#define archive_write_data                (kiln_cli_archive()->archive_write_data)
#define archive_write_data_block          (kiln_cli_archive()->archive_write_data_block)
#define archive_write_disk_new            (kiln_cli_archive()->archive_write_disk_new)
#define archive_write_disk_set_options    (kiln_cli_archive()->archive_write_disk_set_options)
#define archive_write_finish_entry        (kiln_cli_archive()->archive_write_finish_entry)
#define archive_write_free                (kiln_cli_archive()->archive_write_free)
#define archive_write_header              (kiln_cli_archive()->archive_write_header)
#define archive_write_new                 (kiln_cli_archive()->archive_write_new)
#define archive_write_open2               (kiln_cli_archive()->archive_write_open2)
#define archive_write_set_bytes_per_block (kiln_cli_archive()->archive_write_set_bytes_per_block)
#define archive_write_set_format_pax_restricted \
        (kiln_cli_archive()->archive_write_set_format_pax_restricted)
#endif
