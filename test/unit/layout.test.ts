/**
 * The FFI codecs' struct offsets versus the installed C headers: compiles
 * native-headers/layout.c (needs gcc and libfuse3-dev, both installed by scripts/setup.sh)
 * and compares every offset and size it prints with src/fuse/structs.ts.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { BUFVEC, CAP, CONN, ENTRY, FILE_INFO, FORGET_DATA, FUSE_ARGS, FUSE_BUF, FUSE_BUF_FD_SEEK, FUSE_BUF_IS_FD, OPS_ORDER, OPS_SIZE, STAT, STATVFS } from "../../src/fuse/structs.ts";

const repo = new URL("../..", import.meta.url).pathname;
const cflags = spawnSync("pkg-config", ["--cflags", "fuse3"], { encoding: "utf8" });
const haveToolchain = cflags.status === 0 && spawnSync("gcc", ["--version"]).status === 0;

describe.skipIf(!haveToolchain)("struct layouts match the installed headers", () => {
  const dir = mkdtempSync("/tmp/bucketfs-layout-");
  const bin = `${dir}/layout`;
  const cc = spawnSync("gcc", [...cflags.stdout.trim().split(/\s+/), "-o", bin, `${repo}native-headers/layout.c`], { encoding: "utf8" });
  const out = cc.status === 0 ? spawnSync(bin, { encoding: "utf8" }).stdout : "{}";
  rmSync(dir, { recursive: true, force: true });
  const L = JSON.parse(out) as Record<string, number>;

  test("layout.c compiled and ran", () => {
    expect(cc.status).toBe(0);
    expect(Object.keys(L).length).toBeGreaterThan(50);
  });

  test("struct stat", () => {
    expect([L["stat"], L["stat.st_ino"], L["stat.st_nlink"], L["stat.st_mode"], L["stat.st_uid"], L["stat.st_gid"]]).toEqual([STAT.size, STAT.ino, STAT.nlink, STAT.mode, STAT.uid, STAT.gid]);
    expect([L["stat.st_size"], L["stat.st_blksize"], L["stat.st_blocks"], L["stat.st_atim"], L["stat.st_mtim"], L["stat.st_ctim"]]).toEqual([STAT.fsize, STAT.blksize, STAT.blocks, STAT.atim, STAT.mtim, STAT.ctim]);
  });

  test("fuse_entry_param, fuse_file_info, fuse_buf, fuse_bufvec, fuse_args, forget data", () => {
    expect([L["fuse_entry_param"], L["fuse_entry_param.ino"], L["fuse_entry_param.attr"], L["fuse_entry_param.attr_timeout"], L["fuse_entry_param.entry_timeout"]]).toEqual([ENTRY.size, ENTRY.ino, ENTRY.attr, ENTRY.attrTimeout, ENTRY.entryTimeout]);
    expect(L["fuse_file_info"]!).toBeLessThanOrEqual(FILE_INFO.alloc);
    expect([L["fuse_file_info.flags"], L["fuse_file_info.fh"]]).toEqual([FILE_INFO.flags, FILE_INFO.fh]);
    expect([L["fuse_buf"], L["fuse_buf.size"], L["fuse_buf.flags"], L["fuse_buf.mem"], L["fuse_buf.fd"], L["fuse_buf.pos"]]).toEqual([FUSE_BUF.size, FUSE_BUF.fsize, FUSE_BUF.flags, FUSE_BUF.mem, FUSE_BUF.fd, FUSE_BUF.pos]);
    expect([L["fuse_bufvec"], L["fuse_bufvec.count"], L["fuse_bufvec.idx"], L["fuse_bufvec.off"], L["fuse_bufvec.buf"]]).toEqual([BUFVEC.size, BUFVEC.count, BUFVEC.idx, BUFVEC.off, BUFVEC.buf]);
    expect(L["fuse_args"]).toBe(FUSE_ARGS.size);
    expect(L["fuse_forget_data"]).toBe(FORGET_DATA.size);
  });

  test("fuse_lowlevel_ops slot order", () => {
    expect(L["fuse_lowlevel_ops"]).toBe(OPS_SIZE);
    for (const op of ["lookup", "read", "readdirplus", "forget_multi", "statfs", "lseek"] as const) {
      expect(L[`fuse_lowlevel_ops.${op}`]).toBe(OPS_ORDER.indexOf(op) * 8);
    }
  });

  test("fuse_conn_info, statvfs and flag values", () => {
    expect([L["fuse_conn_info.capable"], L["fuse_conn_info.want"], L["fuse_conn_info.max_background"], L["fuse_conn_info.congestion_threshold"]]).toEqual([CONN.capable, CONN.want, CONN.maxBackground, CONN.congestionThreshold]);
    expect([L["statvfs"], L["statvfs.f_bsize"], L["statvfs.f_blocks"], L["statvfs.f_bavail"], L["statvfs.f_files"], L["statvfs.f_namemax"]]).toEqual([STATVFS.size, STATVFS.bsize, STATVFS.blocks, STATVFS.bavail, STATVFS.files, STATVFS.namemax]);
    expect([L["FUSE_CAP_ASYNC_READ"], L["FUSE_CAP_READDIRPLUS"], L["FUSE_CAP_READDIRPLUS_AUTO"], L["FUSE_CAP_PARALLEL_DIROPS"], L["FUSE_CAP_AUTO_INVAL_DATA"], L["FUSE_CAP_CACHE_SYMLINKS"]]).toEqual([CAP.asyncRead, CAP.readdirplus, CAP.readdirplusAuto, CAP.parallelDirops, CAP.autoInvalData, CAP.cacheSymlinks]);
    expect([L["FUSE_BUF_IS_FD"], L["FUSE_BUF_FD_SEEK"]]).toEqual([FUSE_BUF_IS_FD, FUSE_BUF_FD_SEEK]);
  });
});
