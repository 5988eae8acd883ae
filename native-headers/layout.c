/*
 * Prints the struct layouts bucketfs's FFI codecs (src/fuse/structs.ts) assume, as JSON,
 * from the installed libfuse3 and glibc headers. test/unit/layout.test.ts compiles and runs
 * it (when gcc and libfuse3-dev are present) and compares with the codec constants.
 * Not part of the product: bucketfs itself needs no C compiler, only libfuse3.so.3.
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define F(s, m) printf("\"%s.%s\": %zu,\n", #s, #m, offsetof(struct s, m))
#define S(s) printf("\"%s\": %zu,\n", #s, sizeof(struct s))

int main(void) {
  printf("{\n");
  S(stat); F(stat, st_ino); F(stat, st_nlink); F(stat, st_mode); F(stat, st_uid); F(stat, st_gid);
  F(stat, st_size); F(stat, st_blksize); F(stat, st_blocks); F(stat, st_atim); F(stat, st_mtim); F(stat, st_ctim);
  S(fuse_entry_param); F(fuse_entry_param, ino); F(fuse_entry_param, generation); F(fuse_entry_param, attr);
  F(fuse_entry_param, attr_timeout); F(fuse_entry_param, entry_timeout);
  S(fuse_file_info); F(fuse_file_info, flags); F(fuse_file_info, fh);
  S(fuse_buf); F(fuse_buf, size); F(fuse_buf, flags); F(fuse_buf, mem); F(fuse_buf, fd); F(fuse_buf, pos);
  S(fuse_bufvec); F(fuse_bufvec, count); F(fuse_bufvec, idx); F(fuse_bufvec, off); F(fuse_bufvec, buf);
  S(fuse_args);
  S(fuse_lowlevel_ops); F(fuse_lowlevel_ops, lookup); F(fuse_lowlevel_ops, read); F(fuse_lowlevel_ops, readdirplus);
  F(fuse_lowlevel_ops, forget_multi); F(fuse_lowlevel_ops, statfs); F(fuse_lowlevel_ops, lseek);
  F(fuse_conn_info, max_write); F(fuse_conn_info, max_read); F(fuse_conn_info, max_readahead);
  F(fuse_conn_info, capable); F(fuse_conn_info, want); F(fuse_conn_info, max_background);
  F(fuse_conn_info, congestion_threshold); F(fuse_conn_info, time_gran);
  S(statvfs); F(statvfs, f_bsize); F(statvfs, f_frsize); F(statvfs, f_blocks); F(statvfs, f_bfree);
  F(statvfs, f_bavail); F(statvfs, f_files); F(statvfs, f_ffree); F(statvfs, f_favail); F(statvfs, f_fsid);
  F(statvfs, f_flag); F(statvfs, f_namemax);
  S(fuse_forget_data);
  printf("\"FUSE_CAP_SPLICE_READ\": %d, \"FUSE_CAP_ASYNC_READ\": %d, \"FUSE_CAP_READDIRPLUS\": %d, \"FUSE_CAP_READDIRPLUS_AUTO\": %d, \"FUSE_CAP_PARALLEL_DIROPS\": %d, \"FUSE_CAP_AUTO_INVAL_DATA\": %d, \"FUSE_CAP_CACHE_SYMLINKS\": %d, \"FUSE_BUF_IS_FD\": %d, \"FUSE_BUF_FD_SEEK\": %d\n",
         FUSE_CAP_SPLICE_READ, FUSE_CAP_ASYNC_READ, FUSE_CAP_READDIRPLUS, FUSE_CAP_READDIRPLUS_AUTO,
         FUSE_CAP_PARALLEL_DIROPS, FUSE_CAP_AUTO_INVAL_DATA, FUSE_CAP_CACHE_SYMLINKS, FUSE_BUF_IS_FD, FUSE_BUF_FD_SEEK);
  printf("}\n");
  return 0;
}
