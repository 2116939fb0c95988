/*
 * test_compress.c - Accept-Encoding negotiation (q-values, `*`, explicit
 * refusals, malformed members) and the gzip framing of src/compress.c,
 * decompressed again with zlib's inflate.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <zlib.h>

#include "compress.h"

Test(compress, accepts_gzip)
{
    const char *yes[] = {"gzip", "GZIP", "x-gzip", "gzip, deflate, br", "deflate, gzip;q=0.5", "br;q=1, gzip; q=0.001",
                         "*", "*;q=0.1", "identity, *", "gzip;q=1", "gzip;Q=1.000", " gzip ; q=0.8 ", "gzip;level=1",
                         "gzip;q=0, gzip;q=0.5", "gzip;q=bad, gzip"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        cr_assert(mizan_compress_accepts_gzip(yes[i]), "\"%s\" accepts gzip", yes[i]);
    const char *no[] = {"",           "identity",   "deflate, br",  "gzip;q=0",        "gzip;q=0.000",
                        "gzip; q=0.0", "*;q=0",      "gzip;q=0, *",  "*, gzip;q=0",     "gzipx",
                        "xgzip",      "gzip;q=1.5", "gzip;q=2",     "gzip;q=0.0001",   "gzip;q=",
                        "gzip;q=-1",  ",,,", "gzip;q=0.",        "deflate;gzip", "gzip;q=0,*;q=1"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        cr_assert(!mizan_compress_accepts_gzip(no[i]), "\"%s\" refuses gzip", no[i]);
    cr_assert(!mizan_compress_accepts_gzip(NULL), "no header: no gzip");
}

/* Inflates a gzip member (window bits 15 + 16) into a new string. */
static char *gunzip(const unsigned char *in, size_t len, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    cr_assert_eq(inflateInit2(&zs, 15 + 16), Z_OK);
    size_t cap = 1 << 20;
    char *out = malloc(cap);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = (Bytef *)out;
    zs.avail_out = (uInt)cap;
    int rc = inflate(&zs, Z_FINISH);
    cr_assert_eq(rc, Z_STREAM_END, "inflate: %d", rc);
    *out_len = zs.total_out;
    inflateEnd(&zs);
    return out;
}

Test(compress, gzip_round_trip_every_level)
{
    size_t n = 200000;
    char *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = "{\"id\":1,\"title\":\"Hello\",\"body\":\"text\"}"[i % 39];
    for (int level = 1; level <= 9; level++) {
        struct evbuffer *out = evbuffer_new();
        cr_assert_eq(mizan_compress_gzip(body, n, level, out), 0);
        size_t clen = evbuffer_get_length(out);
        unsigned char *z = evbuffer_pullup(out, -1);
        cr_assert(clen > 18 && z[0] == 0x1f && z[1] == 0x8b, "gzip magic at level %d", level);
        cr_assert(clen < n / 10, "repetitive JSON should shrink tenfold at level %d: %zu", level, clen);
        size_t back_len;
        char *back = gunzip(z, clen, &back_len);
        cr_assert_eq(back_len, n);
        cr_assert(memcmp(back, body, n) == 0, "round trip at level %d", level);
        free(back);
        evbuffer_free(out);
    }
    free(body);
}
