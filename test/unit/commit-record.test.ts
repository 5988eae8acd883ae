import { describe, expect, test } from "bun:test";
import {
  buildRecord,
  isReservedPath,
  latestRecordKey,
  parseRecord,
  prefetchPlan,
  recordKey,
  seqOfKey,
  verifyRecord,
  type CommitRecord,
} from "../../src/service/workdir/commit-record.ts";

const file = (path: string, etag: string, size = 3) => ({ path, size, mtimeMs: 1000, mode: 0o644, etag });
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

describe("record keys", () => {
  test("sequence numbers sort as keys; the latest is the highest", () => {
    expect(recordKey("wd/", 7)).toBe("wd/.bucketfs/commits/000000000007.json");
    expect(seqOfKey("wd/", recordKey("wd/", 123))).toBe(123);
    expect(seqOfKey("wd/", "wd/.bucketfs/commits/7.json")).toBeNull();
    expect(seqOfKey("wd/", "other/.bucketfs/commits/000000000007.json")).toBeNull();
    const keys = [recordKey("wd/", 9), recordKey("wd/", 10), "wd/.bucketfs/lease", recordKey("wd/", 2)];
    expect(latestRecordKey("wd/", keys)).toEqual({ key: recordKey("wd/", 10), seq: 10 });
    expect(latestRecordKey("wd/", ["wd/a"])).toBeNull();
  });

  test("the reserved folder", () => {
    expect(isReservedPath(".bucketfs")).toBe(true);
    expect(isReservedPath(".bucketfs/lease")).toBe(true);
    expect(isReservedPath(".bucketfsx")).toBe(false);
    expect(isReservedPath("a/.bucketfs/x")).toBe(false);
  });
});

describe("buildRecord", () => {
  test("files gone since the previous record are carried as deleted with the ETag bucketfs uploaded", () => {
    const r1 = buildRecord({ prev: null, prefix: "wd/", runId: "r1", node: "n", kind: "sync", files: [file("a", "ea"), file("b", "eb")], symlinks: [], dirs: [], now: 1 });
    expect(r1.seq).toBe(1);
    expect(r1.deleted).toEqual([]);
    const r2 = buildRecord({ prev: r1, prefix: "wd/", runId: "r1", node: "n", kind: "stop", files: [file("a", "ea2")], symlinks: [{ path: "l", target: "a" }], dirs: ["empty"], now: 2 });
    expect(r2.seq).toBe(2);
    expect(r2.deleted).toEqual([{ path: "b", etag: "eb" }]);
    // b stays deleted across a later record; a re-created b leaves the list
    const r3 = buildRecord({ prev: r2, prefix: "wd/", runId: "r2", node: "n", kind: "stop", files: [file("a", "ea2")], symlinks: [], dirs: [], now: 3 });
    expect(r3.deleted).toEqual([{ path: "b", etag: "eb" }]);
    const r4 = buildRecord({ prev: r3, prefix: "wd/", runId: "r2", node: "n", kind: "stop", files: [file("a", "ea2"), file("b", "eb2")], symlinks: [], dirs: [], now: 4 });
    expect(r4.deleted).toEqual([]);
  });

  test("keys prefetch could not read are carried as unreadable, never as deleted, and parse back", () => {
    const r1 = buildRecord({ prev: null, prefix: "wd/", runId: "r", node: "n", kind: "sync", files: [file("a", "ea"), file("ghost", "eg")], symlinks: [], dirs: [] });
    const r2 = buildRecord({
      prev: r1, prefix: "wd/", runId: "r2", node: "n", kind: "stop", files: [file("a", "ea")], symlinks: [], dirs: [], unreadable: [{ key: "wd/ghost", etag: "eg" }],
    });
    expect(r2.deleted).toEqual([]);
    expect(r2.unreadable).toEqual([{ key: "wd/ghost", etag: "eg" }]);
    expect(parseRecord(new TextEncoder().encode(JSON.stringify(r2)), "wd/").unreadable).toEqual([{ key: "wd/ghost", etag: "eg" }]);
    expect("unreadable" in buildRecord({ prev: r2, prefix: "wd/", runId: "r3", node: "n", kind: "stop", files: [], symlinks: [], dirs: [] })).toBe(false);
  });

  test("markers (no ETag yet) are never recorded as deleted", () => {
    const r1 = buildRecord({ prev: null, prefix: "wd/", runId: "r", node: "n", kind: "stop", files: [{ ...file(".exitcode", ""), marker: true }], symlinks: [], dirs: [] });
    const r2 = buildRecord({ prev: r1, prefix: "wd/", runId: "r", node: "n", kind: "stop", files: [], symlinks: [], dirs: [] });
    expect(r2.deleted).toEqual([]);
  });
});

describe("prefetchPlan", () => {
  const rec: CommitRecord = buildRecord({
    prev: buildRecord({ prev: null, prefix: "wd/", runId: "r", node: "n", kind: "sync", files: [file("gone", "e1"), file("keep", "k")], symlinks: [], dirs: [] }),
    prefix: "wd/", runId: "r", node: "n", kind: "stop", files: [file("keep", "k")], symlinks: [{ path: "s", target: "../x" }], dirs: ["d/e"],
  });

  test("a key deleted after bucketfs uploaded it is skipped while S3 still holds that ETag", () => {
    const plan = prefetchPlan(rec, [{ key: "wd/gone", etag: "e1" }, { key: "wd/keep", etag: "k" }]);
    expect([...plan.skipDeleted]).toEqual(["gone"]);
    expect(plan.symlinks).toEqual([{ path: "s", target: "../x" }]);
    expect(plan.dirs).toEqual(["d/e"]);
  });

  test("a key another writer changed (new ETag) or added is fetched", () => {
    expect(prefetchPlan(rec, [{ key: "wd/gone", etag: "other" }, { key: "wd/new", etag: "n" }]).skipDeleted.size).toBe(0);
    expect(prefetchPlan(null, [{ key: "wd/gone", etag: "e1" }]).skipDeleted.size).toBe(0);
  });
});

describe("verifyRecord", () => {
  test("lists missing objects, other sizes and other ETags; markers by size only", () => {
    const rec = buildRecord({
      prev: null, prefix: "wd/", runId: "r", node: "n", kind: "stop",
      files: [file("a", "ea"), file("b", "eb"), file("c", "ec", 5), { ...file("m/.exitcode", ""), marker: true }],
      symlinks: [], dirs: [],
    });
    const diffs = verifyRecord(rec, [
      { key: "wd/a", size: 3, etag: "ea" },
      { key: "wd/b", size: 3, etag: "changed" },
      { key: "wd/c", size: 9, etag: "ec" },
      { key: "wd/m/.exitcode", size: 3, etag: "whatever" },
    ]);
    expect(diffs.map((d) => [d.path, d.problem])).toEqual([["b", "etag"], ["c", "size"]]);
    expect(verifyRecord(rec, [])).toHaveLength(4);
  });

  test("compares the full-object CRC64NVME where both the record and S3 have one", () => {
    const rec = buildRecord({
      prev: null, prefix: "wd/", runId: "r", node: "n", kind: "stop",
      files: [{ ...file("a", "ea"), crc64nvme: "rosUhgp5mIg=" }, { ...file("b", "eb"), crc64nvme: "rosUhgp5mIg=" }, file("c", "ec")],
      symlinks: [], dirs: [],
    });
    const diffs = verifyRecord(rec, [
      { key: "wd/a", size: 3, etag: "ea", crc64nvme: "AAAAAAAAAAA=" },
      { key: "wd/b", size: 3, etag: "eb" }, // S3 has no checksum for it: not compared
      { key: "wd/c", size: 3, etag: "ec", crc64nvme: "AAAAAAAAAAA=" }, // the record has none
    ]);
    expect(diffs).toEqual([{ path: "a", problem: "checksum", expected: "crc64nvme rosUhgp5mIg=", actual: "crc64nvme AAAAAAAAAAA=" }]);
  });
});

describe("parseRecord (untrusted input)", () => {
  const good = buildRecord({ prev: null, prefix: "wd/", runId: "r", node: "n", kind: "stop", files: [file("a", "e")], symlinks: [{ path: "l", target: "/etc/passwd" }], dirs: ["d"] });

  test("round-trips a record bucketfs wrote", () => {
    expect(parseRecord(enc(good), "wd/")).toEqual(good);
    const withSum = { ...good, files: [{ ...file("a", "e"), crc64nvme: "rosUhgp5mIg=" }] };
    expect(parseRecord(enc(withSum), "wd/")).toEqual(withSum);
  });

  test.each([
    ["not JSON", new TextEncoder().encode("{")],
    ["another prefix", enc({ ...good, prefix: "x/" })],
    ["a path escaping the workdir", enc({ ...good, files: [file("../etc/x", "e")] })],
    ["an absolute path", enc({ ...good, dirs: ["/etc"] })],
    ["a reserved path", enc({ ...good, files: [file(".bucketfs/lease", "e")] })],
    ["a NUL in a symlink target", enc({ ...good, symlinks: [{ path: "l", target: "a\0b" }] })],
    ["a negative size", enc({ ...good, files: [{ ...file("a", "e"), size: -1 }] })],
    ["no deleted list", enc({ ...good, deleted: undefined })],
    ["a checksum that is not a base64 CRC64", enc({ ...good, files: [{ ...file("a", "e"), crc64nvme: "x" }] })],
  ])("rejects %s", (_name, body) => {
    expect(() => parseRecord(body, "wd/")).toThrow();
  });
});
