/**
 * The `ObjectStore` contract: one suite that every implementation runs alike, the real S3 store
 * against MinIO (test/integration/store-contract.test.ts) and the in-memory fake
 * (test/unit/mem-store.test.ts), so a fake can never drift from what the real store does.
 *
 * Is: behaviour any caller may rely on (listing levels and markers, order, head metadata,
 * ranges and their ends, downloads, uploads read back, conditional puts, error kinds). Objects
 * are seeded and read back through the harness (`seed`/`read`: boto3 for S3, the map for the
 * fake), never through the store under test. Is not: transport or fault behaviour (faults.test.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { StoreError, type ObjectStore } from "../../src/store/types.ts";

export interface ContractHarness {
  store: ObjectStore;
  /** Put an object without the store under test. */
  seed(key: string, body: Uint8Array, meta?: Record<string, string>): Promise<void>;
  /** Read an object without the store under test; null when absent. */
  read(key: string): Promise<{ body: Uint8Array; meta: Record<string, string> } | null>;
  cleanup(): Promise<void>;
}

const enc = (s: string) => new TextEncoder().encode(s);
const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

async function errorOf(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw new Error(`expected a StoreError, got ${String(err)}`, { cause: err });
  }
  throw new Error("expected a rejection");
}

async function ranged(store: ObjectStore, key: string, start: number, end: number, ifMatch?: string): Promise<Uint8Array> {
  const out = new Uint8Array(Math.max(0, end - start));
  const n = await store.streamRange(key, start, end, async (c, pos) => out.set(c, pos - start), undefined, ifMatch);
  return out.subarray(0, n);
}

export function storeContract(name: string, make: () => Promise<ContractHarness>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let h: ContractHarness;
    let tmp: string;
    const big = new Uint8Array(3000).map((_, i) => (i * 13 + 5) & 0xff);

    beforeAll(async () => {
      h = await make();
      tmp = mkdtempSync("/tmp/bucketfs-contract-");
      for (const [k, v] of [["c/", ""], ["c/a.txt", "alpha"], ["c/b/", ""], ["c/b/x", "x"], ["c/d/e/f", "f"], ["c/z", "zz"], ["c/zz/y", "y"]] as const) {
        await h.seed(k, enc(v));
      }
      await h.seed("c/meta.bin", big, { sample: "s1", mode: "0100644" });
    }, 120_000);

    afterAll(async () => {
      await h?.cleanup();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    test("listDir: one level, marker excluded, objects and prefixes in key order", async () => {
      const l = await h.store.listDir("c/");
      expect(l.objects.map((o) => o.key)).toEqual(["c/a.txt", "c/meta.bin", "c/z"]);
      expect(l.prefixes).toEqual(["c/b/", "c/d/", "c/zz/"]);
      const a = l.objects[0]!;
      expect(a).toMatchObject({ size: 5, etag: md5(enc("alpha")) });
      expect(a.lastModifiedMs).toBeGreaterThan(0);
      expect(await h.store.listDir("nothing-here/")).toEqual({ objects: [], prefixes: [] });
    });

    test("listAll: recursive, markers included, key order", async () => {
      const keys: string[] = [];
      for await (const o of h.store.listAll("c/")) keys.push(o.key);
      expect(keys).toEqual(["c/", "c/a.txt", "c/b/", "c/b/x", "c/d/e/f", "c/meta.bin", "c/z", "c/zz/y"]);
    });

    test("hasPrefix", async () => {
      expect(await h.store.hasPrefix("c/d/")).toBe(true);
      expect(await h.store.hasPrefix("c/d/e/")).toBe(true);
      expect(await h.store.hasPrefix("c/a.txt/")).toBe(false);
      expect(await h.store.hasPrefix("nothing-here/")).toBe(false);
    });

    test("head: size, MD5 ETag, user metadata; null when absent", async () => {
      const info = await h.store.head("c/meta.bin");
      expect(info).toMatchObject({ key: "c/meta.bin", size: 3000, etag: md5(big), meta: { sample: "s1", mode: "0100644" } });
      expect(await h.store.head("c/absent")).toBeNull();
      expect(await h.store.head("c/d/")).toBeNull();
    });

    test("headPart: part 1 of a single-part object is the whole object; If-Match; null when absent", async () => {
      const p = await h.store.headPart("c/meta.bin", 1, { algorithm: "crc32c", ifMatch: md5(big) });
      expect(p).toMatchObject({ size: 3000, count: 1, etag: md5(big) });
      expect((await errorOf(h.store.headPart("c/meta.bin", 1, { algorithm: "crc32c", ifMatch: "0".repeat(32) }))).kind).toBe("precondition");
      expect(await h.store.headPart("c/absent", 1, { algorithm: "crc32c" })).toBeNull();
    });

    test("streamRange: ranges, clamped end, empty ranges, If-Match", async () => {
      expect(await ranged(h.store, "c/meta.bin", 0, 10)).toEqual(big.slice(0, 10));
      expect(await ranged(h.store, "c/meta.bin", 2990, 5000)).toEqual(big.slice(2990));
      expect((await ranged(h.store, "c/meta.bin", 3000, 3100)).byteLength).toBe(0);
      expect((await ranged(h.store, "c/meta.bin", 7, 7)).byteLength).toBe(0);
      expect(await ranged(h.store, "c/meta.bin", 100, 200, md5(big))).toEqual(big.slice(100, 200));
      expect((await errorOf(ranged(h.store, "c/meta.bin", 0, 10, "0".repeat(32)))).kind).toBe("precondition");
      expect((await errorOf(ranged(h.store, "c/absent", 0, 10))).kind).toBe("not-found");
    });

    test("download: bytes, size, ETag and metadata; not-found", async () => {
      const dest = join(tmp, "dl");
      const info = await h.store.download("c/meta.bin", dest);
      expect(readFileSync(dest)).toEqual(Buffer.from(big));
      expect(info).toMatchObject({ key: "c/meta.bin", size: 3000, etag: md5(big), meta: { sample: "s1", mode: "0100644" } });
      expect((await errorOf(h.store.download("c/absent", join(tmp, "none")))).kind).toBe("not-found");
    });

    test("upload: read back with metadata; ETag is the MD5 of a single-part body", async () => {
      const src = join(tmp, "up");
      const body = new Uint8Array(70_000).map((_, i) => i & 0xff);
      writeFileSync(src, body);
      const etag = await h.store.upload("c/up/one", src, { meta: { mtime: "1700000000.5" } });
      expect(etag).toBe(md5(body));
      const back = await h.read("c/up/one");
      expect(back?.body).toEqual(body);
      expect(back?.meta).toMatchObject({ mtime: "1700000000.5" });
      expect((await errorOf(h.store.upload("c/up/none", join(tmp, "missing")))).kind).toBe("other");
    });

    test("putSmall / getSmall: If-None-Match creates once; If-Match replaces only the named version", async () => {
      const key = `c/lease-${Math.random().toString(36).slice(2)}`;
      const e1 = await h.store.putSmall(key, enc("one"), { ifNoneMatch: true });
      expect(e1).toBe(md5(enc("one")));
      expect((await errorOf(h.store.putSmall(key, enc("two"), { ifNoneMatch: true }))).kind).toBe("precondition");
      expect((await errorOf(h.store.putSmall(key, enc("two"), { ifMatch: md5(enc("other")) }))).kind).toBe("precondition");
      const e2 = await h.store.putSmall(key, enc("two"), { ifMatch: e1 });
      expect(e2).toBe(md5(enc("two")));
      expect(new TextDecoder().decode((await h.read(key))?.body)).toBe("two");
      const got = await h.store.getSmall(key);
      expect(got?.etag).toBe(e2);
      expect(new TextDecoder().decode(got?.body)).toBe("two");
      expect(await h.store.getSmall("c/absent-record")).toBeNull();
    });

    test("an aborted signal: kind aborted", async () => {
      const ac = new AbortController();
      ac.abort();
      expect((await errorOf(h.store.listDir("c/", ac.signal))).kind).toBe("aborted");
      expect((await errorOf(h.store.head("c/a.txt", ac.signal))).kind).toBe("aborted");
    });
  });
}
