/**
 * Unit tests of the eviction policy (src/cache/evictor.ts) with a real sqlite index and real
 * files in a temp directory: least recently read first, pins, the workdir, limits shared by the
 * buckets of one cachepath, batched last-read times, and the start-up sweep that makes files
 * and rows agree. The free-space floor is off here (it depends on the machine's disk); the
 * integration tests cover it on a tmpfs.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Evictor, readCacheUse, type BucketLedger } from "../../src/cache/evictor.ts";
import { MetaIndex } from "../../src/cache/meta-index.ts";
import { tempNameFor } from "../../src/cache/cache-root.ts";
import { logger } from "../../src/util/log.ts";

const KiB = 1024;
const scratch = mkdtempSync(join(tmpdir(), "evictor-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let n = 0;
interface Bucket {
  root: string;
  db: Database;
  index: MetaIndex;
  ledger: BucketLedger;
  /** Put a cached object: file, index row, ledger; `readMs` sets its last-read time. */
  put(key: string, size: number): void;
  has(key: string): boolean;
}

function bucket(ev: Evictor, opts: { workdir?: string; seed?: (root: string, index: MetaIndex) => void; db?: Database; root?: string } = {}): Bucket {
  const root = opts.root ?? join(scratch, `b${n++}`);
  mkdirSync(root, { recursive: true });
  const db = opts.db ?? new Database(":memory:");
  const index = new MetaIndex(db);
  opts.seed?.(root, index);
  const ledger = ev.attach({ bucket: "b", db, index, root, workdir: opts.workdir, log: logger("t"), dropIdle: () => 0 });
  return {
    root, db, index, ledger,
    put(key, size) {
      const p = join(root, key);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, Buffer.alloc(size, 1));
      index.putCached({ key, etag: "e", size, mtimeMs: 0, mode: null });
      ledger.stored(key, size);
    },
    has: (key) => existsSync(join(root, key)) && index.cached(key) !== undefined,
  };
}

const evictor = (maxBytes: number) => new Evictor(scratch, { maxBytes, minFree: { bytes: 0 } }, logger("t"));

describe("Evictor", () => {
  test("a fetch that would pass cache_size evicts the least recently read objects first, down to one margin (5 %) under it", async () => {
    const ev = evictor(100 * KiB);
    const b = bucket(ev);
    for (const k of ["a", "b", "c", "d"]) {
      b.put(k, 20 * KiB);
      await Bun.sleep(2); // distinct last-read times
    }
    b.ledger.touch("a"); // read again: now the most recent
    const done = b.ledger.reserve(35 * KiB); // 80 + 35 > 100: 15 KiB must go, 20 with the margin
    expect(["a", "b", "c", "d"].map(b.has)).toEqual([true, false, true, true]);
    expect(b.ledger.bytes).toBe(60 * KiB);
    done();
    expect(readCacheUse(b.db)).toMatchObject({ objects: 3, bytes: 60 * KiB });
  });

  test("pinned objects (open or being fetched) are never evicted; the limit is passed rather than fail a read", async () => {
    const ev = evictor(50 * KiB);
    const b = bucket(ev);
    b.put("old", 20 * KiB);
    await Bun.sleep(2);
    b.put("new", 20 * KiB);
    b.ledger.pin("old");
    const done = b.ledger.reserve(30 * KiB); // needs 20 KiB: "old" is pinned, so "new" goes
    expect([b.has("old"), b.has("new")]).toEqual([true, false]);
    done();
    const again = b.ledger.reserve(60 * KiB); // nothing else can go: over the limit, no throw
    expect(b.has("old")).toBe(true);
    again();
    b.ledger.unpin("old");
    b.ledger.reserve(60 * KiB)();
    expect(b.has("old")).toBe(false);
    b.ledger.flush();
    expect(readCacheUse(b.db)).toMatchObject({ objects: 0, bytes: 0, evictions: 2, evictedBytes: 40 * KiB });
  });

  test("buckets sharing a cachepath share one limit: the oldest read across both goes first", async () => {
    const ev = evictor(60 * KiB);
    const x = bucket(ev);
    const y = bucket(ev);
    x.put("x1", 20 * KiB);
    await Bun.sleep(2);
    y.put("y1", 20 * KiB);
    await Bun.sleep(2);
    x.put("x2", 20 * KiB);
    ev.reserve(17 * KiB)(); // 17 KiB must go, 20 with the margin (3 KiB)
    expect([x.has("x1"), y.has("y1"), x.has("x2")]).toEqual([false, true, true]);
    ev.reserve(37 * KiB)();
    expect([y.has("y1"), x.has("x2")]).toEqual([false, true]);
  });

  test("rows of fetched objects and last-read times reach the index in batches, not one write per fetch or touch", () => {
    const ev = evictor(1024 * KiB);
    const b = bucket(ev);
    const rows = () => b.db.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM cache_lru").get()!.n;
    for (let i = 0; i < 10; i++) b.put(`s${i}`, KiB);
    expect([rows(), b.ledger.objects, b.ledger.bytes]).toEqual([0, 10, 10 * KiB]);
    ev.tick();
    expect(rows()).toBe(10);
    b.put("k", KiB);
    b.ledger.flush();
    const readMs = () => b.db.query<{ read_ms: number }, []>("SELECT read_ms FROM cache_lru WHERE key = 'k'").get()!.read_ms;
    const before = readMs();
    b.db.run("UPDATE cache_lru SET read_ms = 1"); // as if read long ago
    for (let i = 0; i < 100; i++) b.ledger.touch("k");
    expect(readMs()).toBe(1);
    ev.tick();
    expect(readMs()).toBeGreaterThanOrEqual(before);
  });

  test("the background pass keeps a margin under the limit", () => {
    const ev = evictor(20 * 1024 * KiB); // 20 MiB: margin 1 MiB
    const b = bucket(ev);
    for (let i = 0; i < 20; i++) b.put(`k${String(i).padStart(2, "0")}`, 1024 * KiB);
    ev.tick(); // 20 MiB used: within the margin, so down to 20 - 2 MiB
    expect(b.ledger.bytes).toBe(18 * 1024 * KiB);
    expect(b.has("k00")).toBe(false);
    expect(b.has("k19")).toBe(true);
    ev.tick(); // now outside the margin: nothing more
    expect(b.ledger.bytes).toBe(18 * 1024 * KiB);
  });

  test("the workdir is never evicted, even if the index names a file in it", () => {
    const ev = evictor(10 * KiB);
    const b = bucket(ev, { workdir: "runs/w" });
    b.put("runs/w/out.bin", 20 * KiB); // cannot happen through ObjectCache; the evictor must still refuse
    b.put("ref.bin", 20 * KiB);
    ev.reserve(10 * KiB)();
    expect(existsSync(join(b.root, "runs/w/out.bin"))).toBe(true);
    expect(b.has("ref.bin")).toBe(false);
  });
});

describe("start-up sweep (crash consistency)", () => {
  test("files without rows, rows without files, wrong sizes and unfinished downloads are removed; the workdir is untouched", () => {
    const root = join(scratch, "sweep");
    const cut = tempNameFor("a.bin"); // a download cut by a crash
    const wdTemp = tempNameFor("out.bin");
    const db = new Database(join(scratch, "sweep.index"), { create: true });
    const seed = (r: string, index: MetaIndex) => {
      const put = (rel: string, size: number, row: number | undefined) => {
        mkdirSync(dirname(join(r, rel)), { recursive: true });
        writeFileSync(join(r, rel), Buffer.alloc(size));
        if (row !== undefined) index.putCached({ key: rel, etag: "e", size: row, mtimeMs: 0, mode: null });
      };
      put("good/a.bin", 100, 100);
      put("orphan/b.bin", 100, undefined); // crash between row delete and unlink (eviction)
      put("short.bin", 50, 100); // wrong size
      put(`good/${cut}`, 10, undefined);
      put("wd/out.bin", 10, undefined); // the workdir
      put(`wd/${wdTemp}`, 10, undefined);
      index.putCached({ key: "gone.bin", etag: "e", size: 5, mtimeMs: 0, mode: null }); // row, no file
    };
    const b = bucket(evictor(1024 * KiB), { root, db, workdir: "wd", seed });
    expect(b.index.allCached().map((r) => r.key)).toEqual(["good/a.bin"]);
    expect(existsSync(join(root, "good/a.bin"))).toBe(true);
    expect(existsSync(join(root, "orphan"))).toBe(false); // emptied directory removed too
    expect(existsSync(join(root, "short.bin"))).toBe(false);
    expect(existsSync(join(root, `good/${cut}`))).toBe(false);
    expect(existsSync(join(root, "wd/out.bin"))).toBe(true);
    expect(existsSync(join(root, `wd/${wdTemp}`))).toBe(true);
    expect(readCacheUse(db)).toMatchObject({ objects: 1, bytes: 100 });
    db.close();
  });

  test("whatever stands at the workdir path or above it (a planted symlink) is left for the lifecycle to refuse", () => {
    const root = join(scratch, "sweep-link");
    const db = new Database(join(scratch, "sweep-link.index"), { create: true });
    const target = join(scratch, "sweep-link-target");
    mkdirSync(target, { recursive: true });
    const seed = (r: string) => {
      mkdirSync(join(r, "runs"), { recursive: true });
      symlinkSync(target, join(r, "runs/a")); // at the workdir
    };
    bucket(evictor(1024 * KiB), { root, db, workdir: "runs/a", seed });
    expect(lstatSync(join(root, "runs/a")).isSymbolicLink()).toBe(true);
    db.close();
    const root2 = join(scratch, "sweep-link2");
    const db2 = new Database(join(scratch, "sweep-link2.index"), { create: true });
    bucket(evictor(1024 * KiB), { root: root2, db: db2, workdir: "top/wd", seed: (r) => symlinkSync(target, join(r, "top")) });
    expect(lstatSync(join(root2, "top")).isSymbolicLink()).toBe(true);
    db2.close();
  });

  test("an index from before eviction existed gets last-read rows for what it cached", () => {
    const seed = (r: string, index: MetaIndex) => {
      writeFileSync(join(r, "a"), Buffer.alloc(7));
      index.putCached({ key: "a", etag: "e", size: 7, mtimeMs: 0, mode: null });
    };
    const b = bucket(evictor(1024 * KiB), { seed });
    expect(readCacheUse(b.db)).toMatchObject({ objects: 1, bytes: 7, evictions: 0 });
    expect(b.ledger.bytes).toBe(7);
  });
});
