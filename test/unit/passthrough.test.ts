/**
 * The passthrough decisions without a kernel: whether INIT accepts passthrough (offered or
 * not, switched off, old protocol), the patch of libfuse's INIT reply, and the per-inode
 * backing-id bookkeeping with a fake ioctl (pure logic; the real ioctls are exercised by
 * test/integration/read-path.test.ts).
 */
import { describe, expect, test } from "bun:test";
import { acceptPassthrough, passthroughRefusal, PassthroughTable, readInitIn, type BackingIo } from "../../src/fuse/passthrough.ts";
import { FOPEN, INIT_FLAG, INIT_FLAG2, INIT_IN, INIT_OUT, fuseAbi } from "../../src/fuse/structs.ts";
import { parseLibfuseVersion } from "../../src/fuse/ffi.ts";
import type { Logger } from "../../src/util/log.ts";

/** This machine's kernel (6.18) sent flags=0x73fffffb flags2=0x5fd (research/passthrough-spike.md). */
const OFFER_6_18 = { minor: 45, flags: 0x73fffffb, flags2: 0x5fd };

function initIn(minor: number, flags: number, flags2: number): DataView {
  const v = new DataView(new ArrayBuffer(64));
  v.setUint32(INIT_IN.major, 7, true);
  v.setUint32(INIT_IN.minor, minor, true);
  v.setUint32(INIT_IN.flags, flags >>> 0, true);
  v.setUint32(INIT_IN.flags2, flags2 >>> 0, true);
  return v;
}

describe("INIT decision", () => {
  test("a 6.18 kernel's offer is accepted when switched on", () => {
    const offer = readInitIn(initIn(45, OFFER_6_18.flags, OFFER_6_18.flags2), 0);
    expect(offer).toEqual(OFFER_6_18);
    expect(passthroughRefusal(offer, true)).toBeUndefined();
  });

  test("switched off: refused whatever the kernel offers", () => {
    expect(passthroughRefusal(OFFER_6_18, false)).toMatch(/switched off/);
  });

  test("a kernel that does not offer it (flag2 bit clear, or no FUSE_INIT_EXT) is refused", () => {
    expect(passthroughRefusal({ ...OFFER_6_18, flags2: OFFER_6_18.flags2 & ~INIT_FLAG2.passthrough }, true)).toMatch(/does not offer/);
    // Without FUSE_INIT_EXT the second flags word is not valid at all: readInitIn ignores it.
    const noExt = readInitIn(initIn(45, OFFER_6_18.flags & ~INIT_FLAG.initExt, 0xffffffff), 0);
    expect(noExt.flags2).toBe(0);
    expect(passthroughRefusal(noExt, true)).toMatch(/does not offer/);
  });

  test("a kernel older than protocol 7.40 is refused", () => {
    expect(passthroughRefusal({ minor: 38, flags: OFFER_6_18.flags, flags2: OFFER_6_18.flags2 }, true)).toMatch(/7\.38.*7\.40/);
  });

  test("the INIT reply is patched: passthrough bit, FUSE_INIT_EXT, no writeback cache, stack depth 1", () => {
    const v = new DataView(new ArrayBuffer(INIT_OUT.size));
    // libfuse 3.14's reply on this machine: flags=0x40409029, flags2=0; plus writeback cache to see it cleared.
    v.setUint32(INIT_OUT.flags, 0x40409029 | INIT_FLAG.writebackCache, true);
    v.setUint16(INIT_OUT.maxPages, 256, true);
    expect(acceptPassthrough(v, 0, INIT_OUT.size)).toBe(true);
    expect(v.getUint32(INIT_OUT.flags, true)).toBe(0x40409029);
    expect(v.getUint32(INIT_OUT.flags2, true)).toBe(INIT_FLAG2.passthrough);
    expect(v.getUint32(INIT_OUT.maxStackDepth, true)).toBe(1);
    expect(v.getUint16(INIT_OUT.maxPages, true)).toBe(256);
  });

  test("a reply too short for the 7.40 fields is left alone", () => {
    const v = new DataView(new ArrayBuffer(24));
    expect(acceptPassthrough(v, 0, 24)).toBe(false);
    expect(new Uint8Array(v.buffer).every((b) => b === 0)).toBe(true);
  });
});

function fakeIo(failWith?: number) {
  const open = new Set<number>();
  let next = 1;
  const calls: string[] = [];
  const io: BackingIo = {
    open(fd) {
      calls.push(`open ${fd}`);
      if (failWith !== undefined) return -failWith;
      open.add(next);
      return next++;
    },
    close(id) {
      calls.push(`close ${id}`);
      return open.delete(id) ? 0 : -9;
    },
  };
  return { io, open, calls };
}

function quietLog(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const l = { warnings, warn: (m: string) => warnings.push(m), info() {}, debug() {}, error() {}, child: () => l };
  return l as unknown as Logger & { warnings: string[] };
}

describe("backing ids per inode", () => {
  const B = (fd: number, version = "etag#1") => ({ fd, version });

  test("opens of one inode share one backing id; it is closed after the last release", () => {
    const f = fakeIo();
    const t = new PassthroughTable(f.io, quietLog());
    t.setState(undefined);
    const p1 = t.plan(7, B(10));
    expect(p1).toEqual({ mode: "passthrough", backingId: 1 });
    t.opened(100, 7, p1, true);
    const p2 = t.plan(7, B(11));
    expect(p2).toEqual({ mode: "passthrough", backingId: 1 });
    t.opened(101, 7, p2, true);
    expect(f.calls).toEqual(["open 10"]);
    t.released(100);
    expect(f.open.size).toBe(1);
    t.released(101);
    expect(f.open.size).toBe(0);
    expect(t.openIds).toBe(0);
    expect(t.counters.opens).toBe(2);
    expect(PassthroughTable.openFlags(p1)).toBe(FOPEN.passthrough);
    expect(PassthroughTable.openFlags(p1) & FOPEN.keepCache).toBe(0);
  });

  test("an open whose reply did not reach the kernel releases a fresh backing id", () => {
    const f = fakeIo();
    const t = new PassthroughTable(f.io, quietLog());
    t.setState(undefined);
    t.opened(1, 3, t.plan(3, B(5)), false);
    expect(f.open.size).toBe(0);
  });

  test("no passthrough while the inode has page-cache opens; direct I/O for another version while passed through", () => {
    const f = fakeIo();
    const t = new PassthroughTable(f.io, quietLog());
    t.setState(undefined);
    const streaming = t.plan(9, undefined); // still being fetched: through the daemon
    expect(streaming).toEqual({ mode: "cached" });
    t.opened(1, 9, streaming, true);
    expect(t.plan(9, B(20))).toEqual({ mode: "cached" }); // the kernel would refuse the mix
    t.released(1);
    const pt = t.plan(9, B(21));
    expect(pt.mode).toBe("passthrough");
    t.opened(2, 9, pt, true);
    const other = t.plan(9, B(22, "etag2#2"));
    expect(other).toEqual({ mode: "direct" });
    expect(PassthroughTable.openFlags(other)).toBe(FOPEN.directIo);
    expect(t.plan(9, undefined)).toEqual({ mode: "direct" });
  });

  test("when the kernel did not accept passthrough nothing is passed through and no ioctl is made", () => {
    const f = fakeIo();
    const t = new PassthroughTable(f.io, quietLog());
    t.setState("switched off (passthrough = no)");
    expect(t.plan(4, B(1))).toEqual({ mode: "cached" });
    expect(f.calls).toEqual([]);
    expect(t.counters).toMatchObject({ state: "off", reason: "switched off (passthrough = no)" });
  });

  test("EPERM from the ioctl switches passthrough off with one warning; later opens go through the daemon", () => {
    const f = fakeIo(1);
    const log = quietLog();
    const t = new PassthroughTable(f.io, log);
    t.setState(undefined);
    expect(t.plan(4, B(1))).toEqual({ mode: "cached" });
    expect(t.plan(5, B(2))).toEqual({ mode: "cached" });
    expect(f.calls).toEqual(["open 1"]);
    expect(log.warnings).toHaveLength(1);
    expect(t.counters).toMatchObject({ state: "off", backingFailures: 1 });
  });

  test("a transient ioctl failure (EMFILE) falls back for that open only", () => {
    const f = fakeIo(24);
    const t = new PassthroughTable(f.io, quietLog());
    t.setState(undefined);
    expect(t.plan(4, B(1))).toEqual({ mode: "cached" });
    expect(t.active).toBe(true);
  });

  test("closeAll releases every backing id", () => {
    const f = fakeIo();
    const t = new PassthroughTable(f.io, quietLog());
    t.setState(undefined);
    t.opened(1, 1, t.plan(1, B(1)), true);
    t.opened(2, 2, t.plan(2, B(2)), true);
    t.closeAll();
    expect(f.open.size).toBe(0);
  });
});

describe("per libfuse version", () => {
  test("a library without a passthrough route (3.3-3.13) is refused with its version; the kernel's reasons come first", () => {
    expect(passthroughRefusal(OFFER_6_18, true, { pkgversion: "3.10.5", route: "none" })).toMatch(/libfuse 3\.10\.5 cannot/);
    expect(passthroughRefusal(OFFER_6_18, true, { pkgversion: "3.17.4", route: "api" })).toBeUndefined();
    expect(passthroughRefusal(OFFER_6_18, true, { pkgversion: "3.14.0", route: "custom-io" })).toBeUndefined();
    expect(passthroughRefusal({ ...OFFER_6_18, minor: 38 }, true, { pkgversion: "3.3.0", route: "none" })).toMatch(/7\.38/);
    expect(passthroughRefusal(OFFER_6_18, false, { pkgversion: "3.3.0", route: "none" })).toMatch(/switched off/);
  });

  test("the library's version: fuse_pkgversion(), else fuse_version() in either encoding", () => {
    expect(parseLibfuseVersion("3.17.4", 317)).toEqual({ major: 3, minor: 17, hotfix: 4 });
    expect(parseLibfuseVersion("3.3.0", 33)).toEqual({ major: 3, minor: 3, hotfix: 0 });
    expect(parseLibfuseVersion("3.18.1-rc0", 318)).toEqual({ major: 3, minor: 18, hotfix: 1 });
    expect(parseLibfuseVersion("", 310)).toEqual({ major: 3, minor: 10, hotfix: 0 });
    expect(parseLibfuseVersion("", 33)).toEqual({ major: 3, minor: 3, hotfix: 0 });
  });

  test("route and layouts per generation", () => {
    expect([3, 10, 13, 14, 16, 17, 18].map((minor) => fuseAbi({ major: 3, minor }).passthrough)).toEqual([
      "none", "none", "none", "custom-io", "custom-io", "api", "api",
    ]);
    expect([3, 4, 8, 17].map((minor) => fuseAbi({ major: 3, minor }).opsCount)).toEqual([42, 43, 44, 44]);
    expect(fuseAbi({ major: 3, minor: 3 }).cacheReaddir).toBe(false);
    expect(fuseAbi({ major: 3, minor: 17 })).toMatchObject({ wantExt: true, sessionNewVersioned: true, fileInfoSize: 64 });
  });
});
