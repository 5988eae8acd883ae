/*
 * Prints, as JSON, the parts of libfuse's public structs that differ between libfuse versions
 * (src/fuse/structs.ts: fuseAbi and the offsets it relies on), from one version's headers.
 * test/unit/layout.test.ts compiles it once per libfuse it finds (the installed one and each
 * built into .build/libfuse/<version>/include) with -DLIBFUSE_MINOR=<minor>: the headers' own
 * FUSE_MINOR_VERSION is not reliable (3.3.0's says 2). Not part of the product.
 */
#define FUSE_USE_VERSION 30
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define F(s, m) printf("\"%s.%s\": %zu,\n", #s, #m, offsetof(struct s, m))
#define S(s) printf("\"%s\": %zu,\n", #s, sizeof(struct s))

/* The 32-bit word at byte 4 of a fuse_file_info with one bit field set: which bit it is. */
#define BIT(m)                                                   \
  do {                                                           \
    struct fuse_file_info fi;                                    \
    uint32_t w;                                                  \
    memset(&fi, 0, sizeof fi);                                   \
    fi.m = 1;                                                    \
    memcpy(&w, (char *)&fi + 4, 4);                              \
    printf("\"fuse_file_info.bit.%s\": %u,\n", #m, w);           \
  } while (0)

int main(void) {
  printf("{\n");
  S(fuse_file_info); F(fuse_file_info, flags); F(fuse_file_info, fh); F(fuse_file_info, lock_owner);
  BIT(direct_io); BIT(keep_cache); BIT(nonseekable);
#if LIBFUSE_MINOR >= 5
  BIT(cache_readdir);
#endif
#if LIBFUSE_MINOR >= 17
  F(fuse_file_info, backing_id);
  F(fuse_conn_info, capable_ext); F(fuse_conn_info, want_ext);
  S(libfuse_version);
  printf("\"FUSE_CAP_PASSTHROUGH\": %lu,\n", (unsigned long)FUSE_CAP_PASSTHROUGH);
#endif
#ifdef FUSE_CAP_OVER_IO_URING
  printf("\"FUSE_CAP_OVER_IO_URING\": %lu,\n", (unsigned long)FUSE_CAP_OVER_IO_URING);
#endif
#if LIBFUSE_MINOR >= 13
  S(fuse_custom_io); F(fuse_custom_io, writev); F(fuse_custom_io, read); F(fuse_custom_io, splice_send);
#endif
  S(fuse_conn_info); F(fuse_conn_info, max_write); F(fuse_conn_info, capable); F(fuse_conn_info, want);
  F(fuse_conn_info, max_background); F(fuse_conn_info, congestion_threshold);
  S(fuse_entry_param); F(fuse_entry_param, attr); F(fuse_entry_param, entry_timeout);
  S(fuse_buf); F(fuse_buf, flags); F(fuse_buf, mem); F(fuse_buf, fd); F(fuse_buf, pos);
  S(fuse_bufvec); F(fuse_bufvec, buf);
  S(fuse_args); S(fuse_forget_data);
  F(fuse_lowlevel_ops, lookup); F(fuse_lowlevel_ops, open); F(fuse_lowlevel_ops, read);
  F(fuse_lowlevel_ops, release); F(fuse_lowlevel_ops, statfs); F(fuse_lowlevel_ops, forget_multi);
  F(fuse_lowlevel_ops, readdirplus);
  printf("\"FUSE_CAP_SPLICE_WRITE\": %d, \"FUSE_CAP_SPLICE_MOVE\": %d, \"FUSE_CAP_READDIRPLUS_AUTO\": %d,\n",
         FUSE_CAP_SPLICE_WRITE, FUSE_CAP_SPLICE_MOVE, FUSE_CAP_READDIRPLUS_AUTO);
  printf("\"FUSE_BUF_IS_FD\": %d, \"FUSE_BUF_FD_SEEK\": %d,\n", FUSE_BUF_IS_FD, FUSE_BUF_FD_SEEK);
  printf("\"fuse_lowlevel_ops\": %zu\n", sizeof(struct fuse_lowlevel_ops));
  printf("}\n");
  return 0;
}
