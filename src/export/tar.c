/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The streaming tar writer. Headers follow what Go's archive/tar writes for
 * BuildKit's layers (containerd's ChangeWriter: PAX format allowed, ustar
 * used whenever it can hold the entry), so that kiln's layers have the same
 * shape byte for byte:
 *   - numbers: zero-padded octal with a trailing NUL ("0000644\0"); a value
 *     that does not fit is written as 0 with a PAX record carrying it;
 *   - the checksum: six octal digits, NUL, space;
 *   - a name longer than 100 bytes is split at a '/' into prefix and name
 *     when both halves fit and it is ASCII, else it goes into a PAX "path"
 *     record; link targets over 100 bytes or not ASCII into "linkpath";
 *   - a PAX header is named "<dir>/PaxHeaders.0/<base>", has mode, owner and
 *     mtime 0 and its records sorted by key; the entry's own header then
 *     holds the first 100 ASCII bytes of the name.
 * The walks that feed it live in diff.c.
 */
#include "export/tar.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/macro.h"

#define BLOCK 512u

/* Field offsets and sizes of a ustar header block. */
#define OFF_NAME     0
#define LEN_NAME     100
#define OFF_MODE     100
#define OFF_UID      108
#define OFF_GID      116
#define LEN_ID       8
#define OFF_SIZE     124
#define OFF_MTIME    136
#define LEN_NUM12    12
#define OFF_CHKSUM   148
#define OFF_TYPE     156
#define OFF_LINKNAME 157
#define OFF_MAGIC    257
#define OFF_VERSION  263
#define OFF_DEVMAJOR 329
#define OFF_DEVMINOR 337
#define OFF_PREFIX   345
#define LEN_PREFIX   155

/* Largest values the octal fields hold (7 and 11 digits). */
#define MAX_OCTAL8  07777777LL
#define MAX_OCTAL12 077777777777LL

struct kiln_export_tar_writer {
        kiln_export_write_fn w;
        void *userdata;
        bool has_epoch;
        bool epoch_all;
        int64_t epoch;
        uint8_t *buf; /* KILN_EXPORT_TAR_CHUNK bytes */
        size_t fill;
        uint64_t total;
        int error; /* sticky: the first failure that left the archive unusable */
        bool finished;
};

/* One PAX record before formatting. */
struct pax_rec {
        const char *key;    /* "path", "SCHILY.xattr." + name, ... */
        const char *suffix; /* appended to key (the xattr name), or NULL */
        const void *value;
        size_t size;
};

struct header {
        const char *name;
        const char *linkname;
        char type;
        uint32_t mode;
        uint64_t uid;
        uint64_t gid;
        uint64_t size;
        int64_t mtime;
        uint32_t devmajor;
        uint32_t devminor;
        const struct kiln_export_tar_xattr *xattrs;
        size_t n_xattrs;
};

struct kiln_export_tar_writer *kiln_export_tar_writer_new(kiln_export_write_fn w, void *userdata,
                                                          const struct kiln_export_tar_options *o)
{
        struct kiln_export_tar_writer *tw = kiln_xcalloc(1, sizeof(*tw));

        tw->w = w;
        tw->userdata = userdata;
        if (o && o->has_epoch) {
                tw->has_epoch = true;
                tw->epoch_all = o->epoch_all;
                tw->epoch = o->epoch;
        }
        tw->buf = kiln_xmalloc(KILN_EXPORT_TAR_CHUNK);
        return tw;
}

struct kiln_export_tar_writer *kiln_export_tar_writer_free(struct kiln_export_tar_writer *tw)
{
        if (!tw)
                return NULL;
        free(tw->buf);
        free(tw);
        return NULL;
}

uint64_t kiln_export_tar_writer_size(const struct kiln_export_tar_writer *tw)
{
        return tw->total;
}

static int check_usable(struct kiln_export_tar_writer *tw, struct kiln_error **err)
{
        if (tw->error < 0)
                return kiln_error_set(err, tw->error, "tar writer stopped by an earlier error");
        if (tw->finished)
                return kiln_error_set(err, -EINVAL, "tar archive already finished");
        return 0;
}

/* A failure while an entry was being written leaves the archive broken:
 * the writer refuses everything after it. Returns r. */
static int stop_on_error(struct kiln_export_tar_writer *tw, int r)
{
        if (r < 0 && tw->error == 0)
                tw->error = r;
        return r;
}

/* Hands the buffer to the sink. The sink's error is returned as it set it. */
static int flush(struct kiln_export_tar_writer *tw, struct kiln_error **err)
{
        int r;

        if (tw->fill == 0)
                return 0;
        r = tw->w(tw->userdata, tw->buf, tw->fill, err);
        if (r < 0) {
                if (!*err)
                        r = kiln_error_set(err, r, "write tar archive: %s", strerror(-r));
                tw->error = r;
                return r;
        }
        tw->fill = 0;
        return 0;
}

static int emit(struct kiln_export_tar_writer *tw, const void *p, size_t n, struct kiln_error **err)
{
        const uint8_t *s = p;

        while (n > 0) {
                size_t k = KILN_EXPORT_TAR_CHUNK - tw->fill;
                int r;

                if (k > n)
                        k = n;
                memcpy(tw->buf + tw->fill, s, k);
                tw->fill += k;
                tw->total += k;
                s += k;
                n -= k;
                if (tw->fill == KILN_EXPORT_TAR_CHUNK) {
                        r = flush(tw, err);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int emit_zeros(struct kiln_export_tar_writer *tw, size_t n, struct kiln_error **err)
{
        static const uint8_t zeros[BLOCK];

        while (n > 0) {
                size_t k = n < BLOCK ? n : BLOCK;
                int r = emit(tw, zeros, k, err);

                if (r < 0)
                        return r;
                n -= k;
        }
        return 0;
}

static size_t padding(uint64_t size)
{
        return (size_t) ((BLOCK - size % BLOCK) % BLOCK);
}

static bool is_ascii(const char *s)
{
        for (; *s; s++)
                if ((unsigned char) *s >= 0x80)
                        return false;
        return true;
}

/* Go's formatString: the bytes that fit, NUL-terminated when room is left
 * (the block is zeroed already). */
static void put_string(uint8_t *field, size_t len, const char *s, size_t n)
{
        memcpy(field, s, n < len ? n : len);
}

/* s without its non-ASCII bytes, at most max bytes (Go's toASCII then the
 * field's truncation). */
static void put_ascii(uint8_t *field, size_t len, const char *s)
{
        size_t j = 0;

        for (; *s && j < len; s++)
                if ((unsigned char) *s < 0x80)
                        field[j++] = (uint8_t) *s;
}

static bool fits_octal(size_t len, int64_t v)
{
        int64_t max = len == LEN_ID ? MAX_OCTAL8 : MAX_OCTAL12;

        return v >= 0 && v <= max;
}

/* Go's formatOctal: len-1 zero-padded digits and a NUL; 0 when v does not
 * fit (a PAX record carries it then). */
static void put_octal(uint8_t *field, size_t len, int64_t v)
{
        uint64_t u;

        if (!fits_octal(len, v))
                v = 0;
        u = (uint64_t) v;
        for (size_t i = len - 1; i > 0; i--) {
                field[i - 1] = (uint8_t) ('0' + (u & 7));
                u >>= 3;
        }
        field[len - 1] = 0;
}

static void put_checksum(uint8_t *blk)
{
        unsigned sum = 0;

        memset(blk + OFF_CHKSUM, ' ', 8);
        for (size_t i = 0; i < BLOCK; i++)
                sum += blk[i];
        put_octal(blk + OFF_CHKSUM, 7, sum);
        blk[OFF_CHKSUM + 7] = ' ';
}

static void put_magic(uint8_t *blk)
{
        memcpy(blk + OFF_MAGIC, "ustar", 6);
        memcpy(blk + OFF_VERSION, "00", 2);
}

/* Go's splitUSTARPath: where name can be split into a prefix (at most 155
 * bytes) and a name (at most 100) at a '/'; 0 when it cannot. */
static size_t split_ustar(const char *name, size_t len)
{
        size_t n = len, i;

        if (len <= LEN_NAME || !is_ascii(name))
                return 0;
        if (n > LEN_PREFIX + 1)
                n = LEN_PREFIX + 1;
        else if (name[n - 1] == '/')
                n--;
        for (i = n; i > 0 && name[i - 1] != '/'; i--)
                ;
        if (i <= 1)
                return 0;
        i--; /* index of the '/' */
        if (len - i - 1 > LEN_NAME || len - i - 1 == 0 || i > LEN_PREFIX)
                return 0;
        return i;
}

static int cmp_pax(const void *a, const void *b)
{
        const struct pax_rec *x = a, *y = b;
        size_t kx = strlen(x->key), ky = strlen(y->key);
        const char *sx = x->suffix ? x->suffix : "", *sy = y->suffix ? y->suffix : "";
        size_t i = 0;

        /* Bytewise comparison of key+suffix without building the strings. */
        for (;; i++) {
                int cx = i < kx ? (unsigned char) x->key[i] : (unsigned char) sx[i - kx];
                int cy = i < ky ? (unsigned char) y->key[i] : (unsigned char) sy[i - ky];

                if (cx != cy || cx == 0)
                        return cx - cy;
        }
}

/* "<len> <key>=<value>\n" where len counts the whole record. */
static int pax_format(struct kiln_buf *b, const struct pax_rec *p)
{
        size_t klen = strlen(p->key) + (p->suffix ? strlen(p->suffix) : 0);
        size_t base = klen + p->size + 3, size = base + decimal_digits(base);
        int r;

        /* Go's formatPAXRecord: counting the length can add a digit. */
        if (decimal_digits(size) != decimal_digits(base))
                size = base + decimal_digits(size);
        r = kiln_buf_printf(b, "%zu %s%s=", size, p->key, p->suffix ? p->suffix : "");
        if (r >= 0)
                r = kiln_buf_append(b, p->value, p->size);
        if (r >= 0)
                r = kiln_buf_putc(b, '\n');
        return r;
}

/* Go's path.Join(dir, "PaxHeaders.0", base) of name, made ASCII, cut to 100
 * bytes, trailing '/' dropped. */
static void put_pax_name(uint8_t *field, const char *name)
{
        const char *slash;
        size_t len = strlen(name), dlen, j = 0;
        char tmp[LEN_NAME + 1];
        const char *base;

        /* path.Split: dir keeps its trailing '/', base is what follows. */
        slash = memrchr(name, '/', len);
        dlen = slash ? (size_t) (slash - name) + 1 : 0;
        base = name + dlen;
        /* dir, then "PaxHeaders.0", then base when not empty; path.Clean
         * drops the trailing '/' of a directory's dir part. */
        for (size_t i = 0; i < dlen && j < LEN_NAME; i++)
                if ((unsigned char) name[i] < 0x80)
                        tmp[j++] = name[i];
        for (const char *s = "PaxHeaders.0"; *s && j < LEN_NAME; s++)
                tmp[j++] = *s;
        if (*base) {
                if (j < LEN_NAME)
                        tmp[j++] = '/';
                for (; *base && j < LEN_NAME; base++)
                        if ((unsigned char) *base < 0x80)
                                tmp[j++] = *base;
        }
        while (j > 0 && tmp[j - 1] == '/')
                j--;
        memcpy(field, tmp, j);
}

static void fill_common(uint8_t *blk, const struct header *h)
{
        put_octal(blk + OFF_MODE, LEN_ID, h->mode);
        put_octal(blk + OFF_UID, LEN_ID, (int64_t) h->uid);
        put_octal(blk + OFF_GID, LEN_ID, (int64_t) h->gid);
        put_octal(blk + OFF_SIZE, LEN_NUM12, (int64_t) h->size);
        put_octal(blk + OFF_MTIME, LEN_NUM12, h->mtime);
        blk[OFF_TYPE] = (uint8_t) h->type;
        put_octal(blk + OFF_DEVMAJOR, LEN_ID, h->devmajor);
        put_octal(blk + OFF_DEVMINOR, LEN_ID, h->devminor);
        put_magic(blk);
}

static int write_header(struct kiln_export_tar_writer *tw, const struct header *h,
                        struct kiln_error **err)
{
        uint8_t blk[BLOCK];
        struct pax_rec *recs = NULL;
        size_t n_recs = 0, name_len = strlen(h->name), prefix = 0;
        const char *linkname = h->linkname ? h->linkname : "";
        size_t link_len = strlen(linkname);
        char uid[24], gid[24], size[24], mtime[24];
        bool long_name = name_len > LEN_NAME || !is_ascii(h->name);
        int r = 0;

        /* As Go: a long or non-ASCII name always gets a "path" record, used
         * only when something else needs PAX or ustar cannot split it. */
        recs = kiln_xcalloc(h->n_xattrs + 6, sizeof(*recs));
        if (long_name) {
                prefix = split_ustar(h->name, name_len);
                recs[n_recs++] = (struct pax_rec){ "path", NULL, h->name, name_len };
        }
        if (link_len > LEN_NAME || !is_ascii(linkname))
                recs[n_recs++] = (struct pax_rec){ "linkpath", NULL, linkname, link_len };
        if (!fits_octal(LEN_ID, (int64_t) h->uid) || h->uid > INT64_MAX) {
                (void) snprintf(uid, sizeof(uid), "%" PRIu64, h->uid);
                recs[n_recs++] = (struct pax_rec){ "uid", NULL, uid, strlen(uid) };
        }
        if (!fits_octal(LEN_ID, (int64_t) h->gid) || h->gid > INT64_MAX) {
                (void) snprintf(gid, sizeof(gid), "%" PRIu64, h->gid);
                recs[n_recs++] = (struct pax_rec){ "gid", NULL, gid, strlen(gid) };
        }
        if (!fits_octal(LEN_NUM12, (int64_t) h->size) || h->size > INT64_MAX) {
                (void) snprintf(size, sizeof(size), "%" PRIu64, h->size);
                recs[n_recs++] = (struct pax_rec){ "size", NULL, size, strlen(size) };
        }
        if (!fits_octal(LEN_NUM12, h->mtime)) {
                (void) snprintf(mtime, sizeof(mtime), "%" PRId64, h->mtime);
                recs[n_recs++] = (struct pax_rec){ "mtime", NULL, mtime, strlen(mtime) };
        }
        for (size_t i = 0; i < h->n_xattrs; i++)
                recs[n_recs++] = (struct pax_rec){ "SCHILY.xattr.", h->xattrs[i].name,
                                                   h->xattrs[i].value, h->xattrs[i].size };

        if (n_recs == 1 && long_name && prefix > 0)
                n_recs = 0; /* the ustar prefix/name split holds it */
        if (n_recs > 0) {
                _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(
                        KILN_EXPORT_TAR_LIMIT_XATTRS + 4 * KILN_EXPORT_TAR_LIMIT_PATH);

                qsort_safe(recs, n_recs, sizeof(*recs), cmp_pax);
                for (size_t i = 0; i < n_recs && r >= 0; i++) {
                        if (i > 0 && cmp_pax(&recs[i - 1], &recs[i]) == 0)
                                continue; /* a repeated xattr name: the first wins */
                        r = pax_format(&b, &recs[i]);
                }
                free(recs);
                recs = NULL;
                if (r < 0)
                        return kiln_error_set(err, r,
                                              "tar entry '%s': extended header larger than %u "
                                              "bytes",
                                              h->name,
                                              KILN_EXPORT_TAR_LIMIT_XATTRS +
                                                      4 * KILN_EXPORT_TAR_LIMIT_PATH);
                memset(blk, 0, sizeof(blk));
                put_pax_name(blk + OFF_NAME, h->name);
                put_octal(blk + OFF_MODE, LEN_ID, 0);
                put_octal(blk + OFF_UID, LEN_ID, 0);
                put_octal(blk + OFF_GID, LEN_ID, 0);
                put_octal(blk + OFF_SIZE, LEN_NUM12, (int64_t) b.len);
                put_octal(blk + OFF_MTIME, LEN_NUM12, 0);
                blk[OFF_TYPE] = 'x';
                put_magic(blk);
                put_checksum(blk);
                r = emit(tw, blk, BLOCK, err);
                if (r >= 0)
                        r = emit(tw, b.data, b.len, err);
                if (r >= 0)
                        r = emit_zeros(tw, padding(b.len), err);
                if (r < 0)
                        return r;

                /* The entry's own header: names cut to their fields. */
                memset(blk, 0, sizeof(blk));
                put_ascii(blk + OFF_NAME, LEN_NAME, h->name);
                put_ascii(blk + OFF_LINKNAME, LEN_NAME, linkname);
        } else {
                free(recs);
                memset(blk, 0, sizeof(blk));
                if (prefix > 0) {
                        put_string(blk + OFF_PREFIX, LEN_PREFIX, h->name, prefix);
                        put_string(blk + OFF_NAME, LEN_NAME, h->name + prefix + 1,
                                   name_len - prefix - 1);
                } else
                        put_string(blk + OFF_NAME, LEN_NAME, h->name, name_len);
                put_string(blk + OFF_LINKNAME, LEN_NAME, linkname, link_len);
        }
        fill_common(blk, h);
        put_checksum(blk);
        return emit(tw, blk, BLOCK, err);
}

/* A name as the archive may hold it: relative, clean, not too long. */
static int check_name(const char *name, struct kiln_error **err)
{
        size_t len = strlen(name);
        const char *p = name;

        if (len == 0)
                return kiln_error_set(err, -EINVAL, "tar entry with an empty name");
        if (len > KILN_EXPORT_TAR_LIMIT_PATH)
                return kiln_error_set(err, -ENAMETOOLONG,
                                      "tar entry '%.64s...': name longer than %u bytes", name,
                                      KILN_EXPORT_TAR_LIMIT_PATH);
        if (name[0] == '/')
                return kiln_error_set(err, -EINVAL, "tar entry '%s': absolute name", name);
        while (*p) {
                const char *e = strchrnul(p, '/');
                size_t n = (size_t) (e - p);

                /* A trailing '/' (directories) ends the loop before it. */
                if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
                        return kiln_error_set(err, -EINVAL,
                                              "tar entry '%s': empty, '.' or '..' component", name);
                p = *e ? e + 1 : e;
        }
        return 0;
}

static void header_from_meta(struct kiln_export_tar_writer *tw, struct header *h,
                             const struct kiln_export_tar_meta *m)
{
        h->mode = m->mode & 07777;
        h->uid = m->uid;
        h->gid = m->gid;
        h->mtime = m->mtime;
        if (tw->has_epoch && (h->mtime > tw->epoch || tw->epoch_all))
                h->mtime = tw->epoch;
        h->xattrs = m->xattrs;
        h->n_xattrs = m->n_xattrs;
}

/* Whether an entry named name may be added now. */
static int start_entry(struct kiln_export_tar_writer *tw, const char *name, struct kiln_error **err)
{
        int r = check_usable(tw, err);

        return r < 0 ? r : check_name(name, err);
}

/* Checks a regular file entry (h->name) and fills h from m; the header
 * is not written yet. A refused entry leaves the writer usable. */
static int start_file(struct kiln_export_tar_writer *tw, struct header *h,
                      const struct kiln_export_tar_meta *m, struct kiln_error **err)
{
        int r = start_entry(tw, h->name, err);

        if (r < 0)
                return r;
        if (h->name[strlen(h->name) - 1] == '/')
                return kiln_error_set(err, -EINVAL, "tar entry '%s': file name ends with '/'",
                                      h->name);
        header_from_meta(tw, h, m);
        return 0;
}

static int add_simple(struct kiln_export_tar_writer *tw, const char *name,
                      const struct kiln_export_tar_meta *m, char type, const char *linkname,
                      uint32_t major, uint32_t minor, struct kiln_error **err)
{
        struct header h = { .name = name, .linkname = linkname, .type = type };
        int r;

        r = start_entry(tw, name, err);
        if (r < 0)
                return r;
        if (linkname) {
                if (!*linkname)
                        return kiln_error_set(err, -EINVAL, "tar entry '%s': empty link target",
                                              name);
                if (strlen(linkname) > KILN_EXPORT_TAR_LIMIT_PATH)
                        return kiln_error_set(err, -ENAMETOOLONG,
                                              "tar entry '%s': link target longer than %u bytes",
                                              name, KILN_EXPORT_TAR_LIMIT_PATH);
        }
        header_from_meta(tw, &h, m);
        h.devmajor = major;
        h.devminor = minor;
        r = write_header(tw, &h, err);
        return stop_on_error(tw, r);
}

int kiln_export_tar_writer_add_file_data(struct kiln_export_tar_writer *tw, const char *name,
                                         const struct kiln_export_tar_meta *m, const void *data,
                                         size_t n, struct kiln_error **err)
{
        struct header h = { .name = name, .type = '0', .size = n };
        int r;

        r = start_file(tw, &h, m, err);
        if (r < 0)
                return r;
        r = write_header(tw, &h, err);
        if (r >= 0)
                r = emit(tw, data, n, err);
        if (r >= 0)
                r = emit_zeros(tw, padding(n), err);
        return stop_on_error(tw, r);
}

int kiln_export_tar_writer_add_file_fd(struct kiln_export_tar_writer *tw, const char *name,
                                       const struct kiln_export_tar_meta *m, int fd, uint64_t size,
                                       struct kiln_error **err)
{
        struct header h = { .name = name, .type = '0', .size = size };
        uint64_t left = size;
        int r;

        r = start_file(tw, &h, m, err);
        if (r < 0)
                return r;
        r = write_header(tw, &h, err);
        /* Read straight into the output buffer: one copy, large reads. */
        while (r >= 0 && left > 0) {
                size_t room = KILN_EXPORT_TAR_CHUNK - tw->fill;
                ssize_t k;

                if (room > left)
                        room = (size_t) left;
                k = read(fd, tw->buf + tw->fill, room);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = kiln_error_set(err, -errno, "read '%s': %s", name, strerror(errno));
                        break;
                }
                if (k == 0) {
                        r = kiln_error_set(err, -EIO,
                                           "read '%s': file changed while being read (%" PRIu64
                                           " of %" PRIu64 " bytes)",
                                           name, size - left, size);
                        break;
                }
                tw->fill += (size_t) k;
                tw->total += (uint64_t) k;
                left -= (uint64_t) k;
                if (tw->fill == KILN_EXPORT_TAR_CHUNK)
                        r = flush(tw, err);
        }
        if (r >= 0)
                r = emit_zeros(tw, padding(size), err);
        return stop_on_error(tw, r);
}

int kiln_export_tar_writer_add_dir(struct kiln_export_tar_writer *tw, const char *name,
                                   const struct kiln_export_tar_meta *m, struct kiln_error **err)
{
        size_t len = strlen(name);
        _cleanup_free_ char *slashed = NULL;

        if (len > 0 && name[len - 1] != '/')
                name = slashed = kiln_xasprintf("%s/", name);
        return add_simple(tw, name, m, '5', NULL, 0, 0, err);
}

int kiln_export_tar_writer_add_symlink(struct kiln_export_tar_writer *tw, const char *name,
                                       const struct kiln_export_tar_meta *m, const char *target,
                                       struct kiln_error **err)
{
        return add_simple(tw, name, m, '2', target, 0, 0, err);
}

int kiln_export_tar_writer_add_hardlink(struct kiln_export_tar_writer *tw, const char *name,
                                        const struct kiln_export_tar_meta *m, const char *target,
                                        struct kiln_error **err)
{
        return add_simple(tw, name, m, '1', target, 0, 0, err);
}

int kiln_export_tar_writer_add_device(struct kiln_export_tar_writer *tw, const char *name,
                                      const struct kiln_export_tar_meta *m, bool block,
                                      uint32_t major, uint32_t minor, struct kiln_error **err)
{
        if (major > MAX_OCTAL8 || minor > MAX_OCTAL8)
                return kiln_error_set(err, -EOVERFLOW,
                                      "tar entry '%s': device number %" PRIu32 ":%" PRIu32
                                      " too large for a tar header",
                                      name, major, minor);
        return add_simple(tw, name, m, block ? '4' : '3', NULL, major, minor, err);
}

int kiln_export_tar_writer_add_fifo(struct kiln_export_tar_writer *tw, const char *name,
                                    const struct kiln_export_tar_meta *m, struct kiln_error **err)
{
        return add_simple(tw, name, m, '6', NULL, 0, 0, err);
}

static int add_whiteout_name(struct kiln_export_tar_writer *tw, const char *dir, size_t dir_len,
                             const char *base, struct kiln_error **err)
{
        static const struct kiln_export_tar_meta zero;
        _cleanup_free_ char *name = NULL;
        struct header h = { .type = '0' };
        int r;

        r = check_usable(tw, err);
        if (r < 0)
                return r;
        if (dir_len > 0)
                name = kiln_xasprintf("%.*s/.wh.%s", (int) dir_len, dir, base);
        else
                name = kiln_xasprintf(".wh.%s", base);
        r = check_name(name, err);
        if (r < 0)
                return r;
        h.name = name;
        header_from_meta(tw, &h, &zero);
        r = write_header(tw, &h, err);
        return stop_on_error(tw, r);
}

int kiln_export_tar_writer_add_whiteout(struct kiln_export_tar_writer *tw, const char *name,
                                        struct kiln_error **err)
{
        size_t len = strlen(name);
        const char *slash;

        while (len > 0 && name[len - 1] == '/')
                len--;
        if (len == 0)
                return kiln_error_set(err, -EINVAL, "whiteout of an empty name");
        slash = memrchr(name, '/', len);
        if (!slash) {
                _cleanup_free_ char *base = kiln_xstrndup(name, len);

                return add_whiteout_name(tw, NULL, 0, base, err);
        }
        {
                _cleanup_free_ char *base =
                        kiln_xstrndup(slash + 1, len - (size_t) (slash - name) - 1);

                return add_whiteout_name(tw, name, (size_t) (slash - name), base, err);
        }
}

int kiln_export_tar_writer_add_opaque(struct kiln_export_tar_writer *tw, const char *dir,
                                      struct kiln_error **err)
{
        size_t len = strlen(dir);

        while (len > 0 && dir[len - 1] == '/')
                len--;
        if (len == 0)
                return kiln_error_set(err, -EINVAL, "opaque marker of an empty directory name");
        return add_whiteout_name(tw, dir, len, ".wh..opq", err);
}

int kiln_export_tar_writer_finish(struct kiln_export_tar_writer *tw, struct kiln_error **err)
{
        int r;

        r = check_usable(tw, err);
        if (r < 0)
                return r;
        r = emit_zeros(tw, 2 * BLOCK, err);
        if (r >= 0)
                r = flush(tw, err);
        if (r < 0)
                return stop_on_error(tw, r);
        tw->finished = true;
        return 0;
}
