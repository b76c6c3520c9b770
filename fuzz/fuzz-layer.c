/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "content/layer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: a layer blob (compression and tar sniffed). Each run applies it to
 * a fresh tree <base>/a/root; beside the tree lie <base>/a/sentinel/keep and
 * <base>/b. Whatever the input, nothing may appear, vanish or change
 * outside the tree: the directories' entries, mtimes and the sentinel file
 * are checked after every run (and the tree is then removed).
 */

#define FUZZ_MAX_INPUT (1u << 20)

static char *base, *dir_a, *root, *sentinel_keep;
static struct stat st_base, st_a, st_sentinel, st_keep;

static size_t count_entries(const char *path)
{
        DIR *d = opendir(path);
        struct dirent *e;
        size_t n = 0;

        if (!d)
                __builtin_trap();
        while ((e = readdir(d)))
                if (!streq(e->d_name, ".") && !streq(e->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static void lstat_or_trap(const char *path, struct stat *st)
{
        if (lstat(path, st) < 0)
                __builtin_trap();
}

static bool same(const struct stat *a, const struct stat *b)
{
        return a->st_ino == b->st_ino && a->st_mode == b->st_mode && a->st_uid == b->st_uid &&
               a->st_gid == b->st_gid && a->st_nlink == b->st_nlink && a->st_size == b->st_size &&
               a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
               a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void teardown(void)
{
        if (base)
                (void) kiln_rm_rf_at(AT_FDCWD, base, NULL, NULL);
}

static void setup(void)
{
        _cleanup_free_ char *sentinel = NULL, *b = NULL;
        int fd;

        base = kiln_xstrdup("/tmp/kiln-fuzz-layer-XXXXXX");
        if (!mkdtemp(base))
                __builtin_trap();
        atexit(teardown);
        dir_a = kiln_xasprintf("%s/a", base);
        root = kiln_xasprintf("%s/root", dir_a);
        sentinel = kiln_xasprintf("%s/sentinel", dir_a);
        sentinel_keep = kiln_xasprintf("%s/keep", sentinel);
        b = kiln_xasprintf("%s/b", base);
        if (mkdir(dir_a, 0755) < 0 || mkdir(sentinel, 0755) < 0 || mkdir(b, 0755) < 0)
                __builtin_trap();
        fd = open(sentinel_keep, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, "keep", 4) != 4)
                __builtin_trap();
        close(fd);
        /* root is created and removed in each run: a's mtime changes then,
         * so a is checked by its entries, base and sentinel by their stat. */
        lstat_or_trap(base, &st_base);
        lstat_or_trap(dir_a, &st_a);
        lstat_or_trap(sentinel, &st_sentinel);
        lstat_or_trap(sentinel_keep, &st_keep);
}

static void check_outside(void)
{
        _cleanup_free_ char *sentinel = kiln_xasprintf("%s/sentinel", dir_a);
        struct stat st;
        char buf[8] = { 0 };
        int fd;

        lstat_or_trap(base, &st);
        if (!same(&st, &st_base) || count_entries(base) != 2)
                __builtin_trap();
        lstat_or_trap(dir_a, &st);
        if (st.st_ino != st_a.st_ino || st.st_mode != st_a.st_mode || st.st_uid != st_a.st_uid ||
            count_entries(dir_a) != 2)
                __builtin_trap();
        lstat_or_trap(sentinel, &st);
        if (!same(&st, &st_sentinel) || count_entries(sentinel) != 1)
                __builtin_trap();
        lstat_or_trap(sentinel_keep, &st);
        if (!same(&st, &st_keep))
                __builtin_trap();
        fd = open(sentinel_keep, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || read(fd, buf, sizeof(buf)) != 4 || memcmp(buf, "keep", 4) != 0)
                __builtin_trap();
        close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct kiln_content_layer_options o = { .no_devices = true, .want_diff_id = true };
        struct kiln_content_layer_stats st;
        struct kiln_error *err = NULL;
        int blob, root_fd, r;

        if (size > FUZZ_MAX_INPUT)
                return 0;
        if (!base)
                setup();
        if (mkdir(root, 0755) < 0)
                __builtin_trap();
        root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        blob = memfd_create("layer", MFD_CLOEXEC);
        if (root_fd < 0 || blob < 0 || (size && write(blob, data, size) != (ssize_t) size) ||
            lseek(blob, 0, SEEK_SET) != 0)
                __builtin_trap();

        r = kiln_content_layer_apply(blob, NULL, root_fd, &o, &st, &err);
        if (r < 0) {
                if (!err || !kiln_error_message(err)[0])
                        __builtin_trap();
                kiln_error_free(err);
        } else if (err || !startswith(st.diff_id, "sha256:"))
                __builtin_trap();

        close(blob);
        close(root_fd);
        check_outside();
        /* The tree may hold read-only directories, immutable nothing: root
         * removes it all. */
        if (kiln_rm_rf_at(AT_FDCWD, root, NULL, NULL) < 0)
                __builtin_trap();
        return 0;
}
