/*
 * Prints the struct layouts bucketfs's FFI codecs (src/fuse/structs.ts) assume, as JSON,
 * from the installed libfuse3 and glibc headers. test/unit/layout.test.ts compiles and runs
 * it (when gcc and libfuse3-dev are present) and compares with the codec constants.
 * Not part of the product: bucketfs itself needs no C compiler, only libfuse3.so.3.
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <stdint.h>
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
  /* Kernel protocol structs (linux/fuse.h). */
  S(fuse_in_header); F(fuse_in_header, len); F(fuse_in_header, opcode); F(fuse_in_header, unique); F(fuse_in_header, nodeid);
  S(fuse_out_header); F(fuse_out_header, len); F(fuse_out_header, error); F(fuse_out_header, unique);
  F(fuse_init_in, major); F(fuse_init_in, minor); F(fuse_init_in, max_readahead); F(fuse_init_in, flags);
  F(fuse_init_in, flags2);
  S(fuse_init_out); F(fuse_init_out, flags); F(fuse_init_out, max_background); F(fuse_init_out, max_write);
  F(fuse_init_out, max_pages); F(fuse_init_out, flags2); F(fuse_init_out, unused);
  F(fuse_read_in, fh); F(fuse_read_in, offset); F(fuse_read_in, size);
  S(fuse_open_out); F(fuse_open_out, fh); F(fuse_open_out, open_flags); F(fuse_open_out, padding);
  {
    /* struct fuse_backing_map is 7.40 (not in this header): the same members, to size the ioctl number. */
    struct backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
    printf("\"backing_map\": %zu, \"FUSE_DEV_IOC_MAGIC\": %d, \"IOW_BACKING_OPEN\": %lu, \"IOW_BACKING_CLOSE\": %lu,\n",
           sizeof(struct backing_map), FUSE_DEV_IOC_MAGIC, (unsigned long)_IOW(FUSE_DEV_IOC_MAGIC, 1, struct backing_map),
           (unsigned long)_IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t));
  }
  printf("\"FUSE_INIT\": %d, \"FUSE_READ\": %d, \"FUSE_OPEN\": %d, \"FUSE_RELEASE\": %d, \"FUSE_LOOKUP\": %d, \"FUSE_GETATTR\": %d, \"FUSE_READDIRPLUS\": %d,\n",
         FUSE_INIT, FUSE_READ, FUSE_OPEN, FUSE_RELEASE, FUSE_LOOKUP, FUSE_GETATTR, FUSE_READDIRPLUS);
  printf("\"FUSE_INIT_EXT\": %d, \"FUSE_WRITEBACK_CACHE\": %d, \"FOPEN_DIRECT_IO\": %d, \"FOPEN_KEEP_CACHE\": %d, \"FOPEN_PARALLEL_DIRECT_WRITES\": %d,\n",
         FUSE_INIT_EXT, FUSE_WRITEBACK_CACHE, FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_PARALLEL_DIRECT_WRITES);
  printf("\"FUSE_CAP_SPLICE_READ\": %d, \"FUSE_CAP_ASYNC_READ\": %d, \"FUSE_CAP_READDIRPLUS\": %d, \"FUSE_CAP_READDIRPLUS_AUTO\": %d, \"FUSE_CAP_PARALLEL_DIROPS\": %d, \"FUSE_CAP_AUTO_INVAL_DATA\": %d, \"FUSE_CAP_CACHE_SYMLINKS\": %d, \"FUSE_BUF_IS_FD\": %d, \"FUSE_BUF_FD_SEEK\": %d\n",
         FUSE_CAP_SPLICE_READ, FUSE_CAP_ASYNC_READ, FUSE_CAP_READDIRPLUS, FUSE_CAP_READDIRPLUS_AUTO,
         FUSE_CAP_PARALLEL_DIROPS, FUSE_CAP_AUTO_INVAL_DATA, FUSE_CAP_CACHE_SYMLINKS, FUSE_BUF_IS_FD, FUSE_BUF_FD_SEEK);
  printf("}\n");
  return 0;
}
