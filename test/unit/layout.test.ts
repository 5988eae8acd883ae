/**
 * The FFI codecs' struct offsets versus the installed C headers: compiles
 * native-headers/layout.c (needs gcc and libfuse3-dev, both installed by scripts/setup.sh)
 * and compares every offset and size it prints with src/fuse/structs.ts. Then the parts that
 * differ between libfuse versions (fuseAbi): native-headers/abi.c compiled against the
 * installed headers and against each libfuse built into .build/libfuse/<version>/include
 * (scripts/build-libfuse.sh); a version not built there is skipped with its reason.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import {
  BACKING_MAP, BUFVEC, CAP, CONN, DEV_IOC, ENTRY, FI_BIT, FILE_INFO, FOPEN, FORGET_DATA, FUSE_ARGS, FUSE_BUF, FUSE_BUF_FD_SEEK,
  FUSE_BUF_IS_FD, IN_HEADER, INIT_FLAG, INIT_IN, INIT_OUT, OPCODE, OPEN_OUT, OPS_ORDER, OPS_SIZE, OUT_HEADER, READ_IN,
  STAT, STATVFS, fuseAbi,
} from "../../src/fuse/structs.ts";

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

  test("kernel protocol: request/reply headers, INIT, READ and OPEN bodies, opcodes", () => {
    expect([L["fuse_in_header"], L["fuse_in_header.len"], L["fuse_in_header.opcode"], L["fuse_in_header.unique"], L["fuse_in_header.nodeid"]]).toEqual([IN_HEADER.size, IN_HEADER.len, IN_HEADER.opcode, IN_HEADER.unique, IN_HEADER.nodeid]);
    expect([L["fuse_out_header"], L["fuse_out_header.len"], L["fuse_out_header.error"], L["fuse_out_header.unique"]]).toEqual([OUT_HEADER.size, OUT_HEADER.len, OUT_HEADER.error, OUT_HEADER.unique]);
    expect([L["fuse_init_in.major"], L["fuse_init_in.minor"], L["fuse_init_in.max_readahead"], L["fuse_init_in.flags"], L["fuse_init_in.flags2"]]).toEqual([INIT_IN.major, INIT_IN.minor, INIT_IN.maxReadahead, INIT_IN.flags, INIT_IN.flags2]);
    expect([L["fuse_init_out"], L["fuse_init_out.flags"], L["fuse_init_out.max_background"], L["fuse_init_out.max_write"], L["fuse_init_out.max_pages"], L["fuse_init_out.flags2"]]).toEqual([INIT_OUT.size, INIT_OUT.flags, INIT_OUT.maxBackground, INIT_OUT.maxWrite, INIT_OUT.maxPages, INIT_OUT.flags2]);
    // 7.40's max_stack_depth is the first word of the 7.38 header's unused[]; backing_id is its padding.
    expect(L["fuse_init_out.unused"]).toBe(INIT_OUT.maxStackDepth);
    expect([L["fuse_read_in.fh"], L["fuse_read_in.offset"], L["fuse_read_in.size"]]).toEqual([READ_IN.fh, READ_IN.offset, READ_IN.size]);
    expect([L["fuse_open_out"], L["fuse_open_out.fh"], L["fuse_open_out.open_flags"], L["fuse_open_out.padding"]]).toEqual([OPEN_OUT.size, OPEN_OUT.fh, OPEN_OUT.openFlags, OPEN_OUT.backingId]);
    expect([L["FUSE_INIT"], L["FUSE_READ"], L["FUSE_OPEN"], L["FUSE_RELEASE"], L["FUSE_LOOKUP"], L["FUSE_GETATTR"], L["FUSE_READDIRPLUS"]]).toEqual([OPCODE.INIT, OPCODE.READ, OPCODE.OPEN, OPCODE.RELEASE, OPCODE.LOOKUP, OPCODE.GETATTR, OPCODE.READDIRPLUS]);
    expect([L["FUSE_INIT_EXT"], L["FUSE_WRITEBACK_CACHE"], L["FOPEN_DIRECT_IO"], L["FOPEN_KEEP_CACHE"]]).toEqual([INIT_FLAG.initExt, INIT_FLAG.writebackCache, FOPEN.directIo, FOPEN.keepCache]);
    // FOPEN_PASSTHROUGH (7.40) is the next bit after the header's last open flag.
    expect(FOPEN.passthrough).toBe(L["FOPEN_PARALLEL_DIRECT_WRITES"]! << 1);
  });

  test("passthrough ioctl numbers: _IOW of the header's FUSE_DEV_IOC_MAGIC", () => {
    expect([L["backing_map"], L["FUSE_DEV_IOC_MAGIC"]]).toEqual([BACKING_MAP.size, DEV_IOC.magic]);
    expect([L["IOW_BACKING_OPEN"], L["IOW_BACKING_CLOSE"]]).toEqual([DEV_IOC.backingOpen, DEV_IOC.backingClose]);
  });
});

/** The headers of one libfuse version: the installed ones, or a release built into .build/libfuse/. */
interface Headers {
  version: string;
  cflags: string[] | undefined;
  skip?: string;
}

const installedVersion = spawnSync("pkg-config", ["--modversion", "fuse3"], { encoding: "utf8" }).stdout?.trim() ?? "";
const HEADERS: Headers[] = [
  haveToolchain ? { version: installedVersion, cflags: cflags.stdout.trim().split(/\s+/) } : { version: "installed", cflags: undefined, skip: "no gcc or libfuse3-dev" },
  ...["3.3.0", "3.10.5", "3.17.4", "3.18.1"].map((v): Headers => {
    const inc = `${repo}.build/libfuse/${v}/include`;
    return existsSync(`${inc}/fuse_lowlevel.h`) && haveToolchain
      ? { version: v, cflags: [`-I${inc}`] }
      : { version: v, cflags: undefined, skip: haveToolchain ? `.build/libfuse/${v} not built (scripts/build-libfuse.sh)` : "no gcc" };
  }),
];

function compileAbi(h: Headers): Record<string, number> {
  const minor = Number(h.version.split(".")[1]);
  const dir = mkdtempSync("/tmp/bucketfs-abi-");
  try {
    const bin = `${dir}/abi`;
    const cc = spawnSync("gcc", [`-DLIBFUSE_MINOR=${minor}`, ...h.cflags!, "-o", bin, `${repo}native-headers/abi.c`], { encoding: "utf8" });
    if (cc.status !== 0) throw new Error(`abi.c against libfuse ${h.version}: ${cc.stderr}`);
    return JSON.parse(spawnSync(bin, { encoding: "utf8" }).stdout) as Record<string, number>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("per libfuse version: fuseAbi versus that version's headers", () => {
  for (const h of HEADERS) {
    const title = h.skip ? `libfuse ${h.version}: SKIPPED, ${h.skip}` : `libfuse ${h.version}`;
    test.skipIf(h.skip !== undefined)(title, () => {
      const [major, minor] = h.version.split(".").map(Number) as [number, number];
      const abi = fuseAbi({ major, minor });
      const L = compileAbi(h);
      // fuse_file_info: the offsets every version shares, its size, and the bits we set.
      expect(L["fuse_file_info"]).toBe(abi.fileInfoSize);
      expect(abi.fileInfoSize).toBeLessThanOrEqual(FILE_INFO.alloc);
      expect([L["fuse_file_info.flags"], L["fuse_file_info.fh"], L["fuse_file_info.lock_owner"]]).toEqual([FILE_INFO.flags, FILE_INFO.fh, FILE_INFO.lockOwner]);
      expect([L["fuse_file_info.bit.direct_io"], L["fuse_file_info.bit.keep_cache"], L["fuse_file_info.bit.nonseekable"]]).toEqual([FI_BIT.directIo, FI_BIT.keepCache, FI_BIT.nonseekable]);
      expect(L["fuse_file_info.bit.cache_readdir"]).toBe(abi.cacheReaddir ? FI_BIT.cacheReaddir : undefined);
      // fuse_conn_info: same size and leading fields; want_ext and the passthrough capability in 3.17+.
      expect([L["fuse_conn_info"], L["fuse_conn_info.max_write"], L["fuse_conn_info.capable"], L["fuse_conn_info.want"], L["fuse_conn_info.max_background"], L["fuse_conn_info.congestion_threshold"]])
        .toEqual([CONN.size, CONN.maxWrite, CONN.capable, CONN.want, CONN.maxBackground, CONN.congestionThreshold]);
      if (abi.wantExt) {
        expect([L["fuse_conn_info.capable_ext"], L["fuse_conn_info.want_ext"], L["fuse_file_info.backing_id"], L["FUSE_CAP_PASSTHROUGH"]]).toEqual([CONN.capableExt, CONN.wantExt, FILE_INFO.backingId, CAP.passthrough]);
        expect(L["libfuse_version"]).toBe(16); // {major, minor, hotfix, padding}, as session.ts passes it
      } else {
        expect([L["fuse_conn_info.want_ext"], L["fuse_file_info.backing_id"]]).toEqual([undefined, undefined]);
      }
      expect(abi.sessionNewVersioned).toBe(abi.wantExt);
      // 3.18's io_uring capability, which the init callback always clears.
      if (L["FUSE_CAP_OVER_IO_URING"] !== undefined) expect(L["FUSE_CAP_OVER_IO_URING"]).toBe(CAP.overIoUring);
      expect(minor < 18 || L["FUSE_CAP_OVER_IO_URING"] !== undefined).toBe(true);
      // The custom I/O table session.ts fills on 3.14-3.16: {writev, read, splice_receive, splice_send}.
      if (abi.passthrough === "custom-io") {
        expect([L["fuse_custom_io.writev"], L["fuse_custom_io.read"], L["fuse_custom_io.splice_send"]]).toEqual([0, 8, 24]);
      }
      expect(abi.passthrough).toBe(minor >= 17 ? "api" : minor >= 14 ? "custom-io" : "none");
      // fuse_lowlevel_ops: we pass at most what this version has, in the shared slot order.
      const slots = L["fuse_lowlevel_ops"]! / 8;
      expect(abi.opsCount).toBe(Math.min(slots, OPS_ORDER.length));
      for (const op of ["lookup", "open", "read", "release", "statfs", "forget_multi", "readdirplus"] as const) {
        expect({ op, at: L[`fuse_lowlevel_ops.${op}`] }).toEqual({ op, at: OPS_ORDER.indexOf(op) * 8 });
      }
      // Unchanged across versions.
      expect([L["fuse_entry_param"], L["fuse_entry_param.attr"], L["fuse_entry_param.entry_timeout"]]).toEqual([ENTRY.size, ENTRY.attr, ENTRY.entryTimeout]);
      expect([L["fuse_buf"], L["fuse_buf.flags"], L["fuse_buf.mem"], L["fuse_buf.fd"], L["fuse_buf.pos"], L["fuse_bufvec"], L["fuse_bufvec.buf"]])
        .toEqual([abi.fuseBufSize, FUSE_BUF.flags, FUSE_BUF.mem, FUSE_BUF.fd, FUSE_BUF.pos, abi.bufvecSize, BUFVEC.buf]);
      // What we allocate holds the largest (3.17 appended fuse_buf.mem_size).
      expect(abi.fuseBufSize).toBeLessThanOrEqual(FUSE_BUF.alloc);
      expect(abi.bufvecSize).toBeLessThanOrEqual(BUFVEC.alloc);
      expect([L["fuse_args"], L["fuse_forget_data"], L["FUSE_BUF_IS_FD"], L["FUSE_BUF_FD_SEEK"]]).toEqual([FUSE_ARGS.size, FORGET_DATA.size, FUSE_BUF_IS_FD, FUSE_BUF_FD_SEEK]);
      expect([L["FUSE_CAP_SPLICE_WRITE"], L["FUSE_CAP_SPLICE_MOVE"], L["FUSE_CAP_READDIRPLUS_AUTO"]]).toEqual([CAP.spliceWrite, CAP.spliceMove, CAP.readdirplusAuto]);
    });
  }
});
