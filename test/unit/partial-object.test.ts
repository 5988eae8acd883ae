/**
 * Scheduling logic of streamed reads, against an in-memory store that records every ranged
 * GET (a fake is right here: this is the pure fetch-planning logic; test/integration covers
 * the same path through real mounts and MinIO).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { BLOCK_SIZE, PartialObject } from "../../src/cache/partial-object.ts";
import type { ObjectStore } from "../../src/store/types.ts";
import { MemStore } from "../helpers/mem-store.ts";
import { logger } from "../../src/util/log.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync("/tmp/bucketfs-partial-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The shared in-memory store, with one object "k" and GETs taking 2 ms (so they overlap). */
function fakeStore(data: Uint8Array, etag = "e1") {
  const store = new MemStore("b");
  store.put("k", data).etag = etag;
  store.delayMs = 2;
  return { store, gets: store.gets, maxInflight: () => store.maxInflight, setEtag: (e: string) => void (store.objects.get("k")!.etag = e) };
}

let n = 0;
function make(data: Uint8Array, store: ObjectStore, opts = { chunkBlocks: 4, maxWindowBlocks: 16, maxInflight: 3 }) {
  n++;
  const completed: PartialObject[] = [];
  const p = new PartialObject("k", "e1", data.length, `${dir}/t${n}`, `${dir}/f${n}`, store, (x) => completed.push(x), logger("t"), opts);
  return { p, completed, final: `${dir}/f${n}` };
}

const data = new Uint8Array(40 * MiB + 123).map((_, i) => (i * 31 + 7) & 0xff);

describe("streamed reads", () => {
  test("a small read at the start fetches little (head -c 100 of a big object)", async () => {
    const f = fakeStore(data);
    const { p } = make(data, f.store);
    await p.ensure(0, 100);
    // Only the block asked for: nothing is read ahead before a second read shows a sequential reader.
    expect(f.gets).toEqual([{ key: "k", start: 0, end: BLOCK_SIZE, ifMatch: "e1" }]);
    expect(p.complete).toBe(false);
    p.discard();
  });

  test("a random read far into the object fetches one block", async () => {
    const f = fakeStore(data);
    const { p } = make(data, f.store);
    await p.ensure(30 * MiB + 5, 10);
    expect(f.gets).toEqual([{ key: "k", start: 30 * MiB, end: 31 * MiB, ifMatch: "e1" }]);
    p.discard();
  });

  test("a sequential scan gets every byte right, bounded GETs, then completes and is renamed", async () => {
    const f = fakeStore(data);
    const { p, completed, final } = make(data, f.store);
    for (let off = 0; off < data.length; off += 128 * 1024) await p.ensure(off, 128 * 1024);
    for (let i = 0; i < 50 && completed.length === 0; i++) await Bun.sleep(10);
    expect(completed).toHaveLength(1);
    expect(p.complete).toBe(true);
    expect(existsSync(final)).toBe(true);
    expect(Buffer.compare(readFileSync(final), Buffer.from(data))).toBe(0);
    expect(f.maxInflight()).toBeLessThanOrEqual(3);
    // No byte fetched twice.
    expect(f.gets.reduce((s, g) => s + (g.end - g.start), 0)).toBe(data.length);
    expect(f.gets.every((g) => g.ifMatch === "e1")).toBe(true);
  });

  test("a sequential reader whose READs arrive out of order keeps chunk-sized GETs", async () => {
    const f = fakeStore(data);
    const { p } = make(data, f.store);
    // Two READs in flight, the second arriving first (what the kernel's read-ahead does).
    for (let off = 0; off + 2 * MiB <= data.length; off += 2 * MiB) {
      await Promise.all([p.ensure(off + MiB, MiB), p.ensure(off, MiB)]);
    }
    const small = f.gets.filter((g) => g.end - g.start < 4 * BLOCK_SIZE && g.end !== data.length);
    // Chunk size here is 4 blocks. Only the start is fetched in smaller pieces while the window
    // grows (the first read takes just its own block, then 2, 4, ...); from the second chunk
    // boundary on, every GET is a whole chunk.
    expect(small.every((g) => g.end <= 8 * BLOCK_SIZE)).toBe(true);
    expect(f.gets.filter((g) => g.start >= 8 * BLOCK_SIZE && g.end !== data.length).every((g) => g.end - g.start === 4 * BLOCK_SIZE)).toBe(true);
    // The ramp (1, 1, 1, 2, 2 blocks here) costs a few GETs more than whole chunks would.
    expect(f.gets.length).toBeLessThanOrEqual(Math.ceil(data.length / (4 * BLOCK_SIZE)) + 5);
    p.discard();
  });

  test("a far link (GETs slow to answer) stretches a sequential reader's window, with more GETs in flight; a near one does not", async () => {
    const run = async (delayMs: number) => {
      const f = fakeStore(data);
      f.store.delayMs = delayMs;
      const { p } = make(data, f.store);
      for (let off = 0; off < data.length; off += MiB) await p.ensure(off, MiB);
      p.discard();
      return f.maxInflight();
    };
    // maxInflight 3 here, 6 once stretched (GETs that took 60 ms to their first byte); the
    // store counts the one HEAD (what checks the object) too, so 4 without a stretch at most.
    const far = await run(60);
    expect(far).toBeGreaterThanOrEqual(5);
    expect(far).toBeLessThanOrEqual(7);
    expect(await run(2)).toBeLessThanOrEqual(4);
  });

  test("overlapping readers share GETs", async () => {
    const f = fakeStore(data);
    const { p } = make(data, f.store);
    await Promise.all(Array.from({ length: 8 }, () => p.ensure(MiB, 2 * MiB)));
    const starts = f.gets.map((g) => g.start);
    expect(new Set(starts).size).toBe(starts.length);
    p.discard();
  });

  test("an object changed in S3 fails the read (If-Match) instead of mixing versions", async () => {
    const f = fakeStore(data);
    f.setEtag("e2");
    const { p } = make(data, f.store);
    await expect(p.ensure(0, 10)).rejects.toMatchObject({ kind: "precondition" });
    p.discard();
  });

  test("a copy that does not match its MD5 ETag: the last READ fails (corrupt), nothing is cached", async () => {
    const small = data.subarray(0, 10 * MiB + 7);
    const store = new MemStore("b");
    const etag = store.put("k", small).etag;
    store.flipByte.set("k", 5 * MiB + 3);
    n++;
    const completed: PartialObject[] = [];
    const p = new PartialObject("k", etag, small.length, `${dir}/t${n}`, `${dir}/f${n}`, store, (x) => completed.push(x), logger("t"), { chunkBlocks: 4, maxWindowBlocks: 16, maxInflight: 3 });
    let failed: unknown;
    for (let off = 0; off < small.length && failed === undefined; off += 128 * 1024) {
      await p.ensure(off, 128 * 1024).catch((e) => (failed = e));
    }
    expect(failed).toMatchObject({ kind: "corrupt" });
    await expect(p.ensure(0, 10)).rejects.toMatchObject({ kind: "corrupt" });
    expect(completed).toEqual([]);
    expect(existsSync(`${dir}/f${n}`)).toBe(false);
    expect(existsSync(p.tmpPath)).toBe(false);
  });

  test("a copy that matches its MD5 ETag is renamed into place after the last READ", async () => {
    const small = data.subarray(0, 10 * MiB + 7);
    const store = new MemStore("b");
    const etag = store.put("k", small).etag;
    n++;
    const completed: PartialObject[] = [];
    const p = new PartialObject("k", etag, small.length, `${dir}/t${n}`, `${dir}/f${n}`, store, (x) => completed.push(x), logger("t"), { chunkBlocks: 4, maxWindowBlocks: 16, maxInflight: 3 });
    for (let off = 0; off < small.length; off += 128 * 1024) await p.ensure(off, 128 * 1024);
    expect(p.done).toBe(true);
    expect(completed).toHaveLength(1);
    expect(Buffer.compare(readFileSync(`${dir}/f${n}`), Buffer.from(small))).toBe(0);
  });

  test("what S3 said of the same version at an earlier open is used instead of asking again; another version's is not", async () => {
    const small = data.subarray(0, 10 * MiB + 7);
    const store = new MemStore("b");
    const etag = store.put("k", small).etag;
    let asked = 0;
    const ask = store.integrity.bind(store);
    store.integrity = (...a: Parameters<typeof ask>) => (asked++, ask(...a));
    const learned: unknown[] = [];
    const open = (integrity?: { etag: string; size: number }) => {
      n++;
      return new PartialObject("k", etag, small.length, `${dir}/t${n}`, `${dir}/f${n}`, store, () => {}, logger("t"),
        { chunkBlocks: 4, maxWindowBlocks: 16, maxInflight: 3 }, undefined, { integrity, learned: (i) => learned.push(i) });
    };
    // Nothing remembered: asked once, and the answer is handed back to be remembered.
    const a = open();
    for (let off = 0; off < small.length; off += 128 * 1024) await a.ensure(off, 128 * 1024);
    expect(a.done).toBe(true);
    expect(asked).toBe(1);
    expect(learned).toEqual([{ etag, size: small.length }]);
    // The same version: not asked, and its bytes are still checked whole (a flipped byte fails the last READ).
    store.flipByte.set("k", 5 * MiB + 3);
    const b = open({ etag, size: small.length });
    let failed: unknown;
    for (let off = 0; off < small.length && failed === undefined; off += 128 * 1024) await b.ensure(off, 128 * 1024).catch((e) => (failed = e));
    expect(failed).toMatchObject({ kind: "corrupt" });
    expect(asked).toBe(1);
    // Another version's answer is not used: asked.
    store.flipByte.delete("k");
    const c = open({ etag: "0123456789abcdef0123456789abcdef-2", size: small.length });
    await c.ensure(0, 10);
    expect(asked).toBe(2);
    c.discard();
  });

  test("discard removes the temp file", async () => {
    const f = fakeStore(data);
    const { p } = make(data, f.store);
    await p.ensure(0, 10);
    const tmp = p.tmpPath;
    expect(existsSync(tmp)).toBe(true);
    p.discard();
    expect(existsSync(tmp)).toBe(false);
  });
});

describe("readers follow a GET as it streams", () => {
  test("a READ of a GET's first block is answered while the rest of that GET is still on its way", async () => {
    const f = fakeStore(data);
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let delivered = 0;
    // The body of every GET: its first block, then nothing until the gate opens.
    const store = new Proxy(f.store, {
      get(target, prop) {
        if (prop !== "streamRange") return Reflect.get(target, prop, target);
        const streamRange: ObjectStore["streamRange"] = async (key, start, end, sink) => {
          for (let pos = start; pos < end; pos += BLOCK_SIZE) {
            if (pos > start) await gate;
            const piece = data.subarray(pos, Math.min(end, pos + BLOCK_SIZE));
            await sink(piece, pos);
            delivered += piece.byteLength;
          }
          return end - start;
        };
        return streamRange;
      },
    }) as ObjectStore;
    const { p } = make(data, store);
    await p.ensure(0, 100);
    // The second read shows a sequential reader: a 4-block GET of blocks 0-3 (block 0 is here already).
    // Answered with the gate still shut: blocks 2 and 3 of that GET cannot have arrived.
    await p.ensure(BLOCK_SIZE, 100);
    expect(delivered).toBeLessThan(data.length);
    expect(p.complete).toBe(false);
    expect(readFileSync(`${dir}/t${n}`).subarray(BLOCK_SIZE, BLOCK_SIZE + 100)).toEqual(Buffer.from(data.subarray(BLOCK_SIZE, BLOCK_SIZE + 100)));
    open();
    await p.ensure(3 * BLOCK_SIZE, BLOCK_SIZE);
    p.discard();
  });
});
