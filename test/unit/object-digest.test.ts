/**
 * The whole-object check of a streamed copy (cache/object-digest.ts) on real files, with the
 * hashing threads of store/hashing.ts: a multipart ETag is checked part by part, each part
 * hashed as soon as its own blocks are in, whatever the order they arrive in.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { StreamedDigest } from "../../src/cache/object-digest.ts";
import { HASH_THREADS, rangeHasher } from "../../src/store/hashing.ts";
import { multipartEtagOfDigests, type Verification } from "../../src/store/checksum.ts";

const dir = mkdtempSync("/tmp/bucketfs-digest-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const BS = 64 * 1024;
const md5 = (b: Uint8Array) => new Uint8Array(createHash("md5").update(b).digest());

/** A file of `parts` parts of `partSize` bytes (the last shorter), and its multipart ETag check. */
function object(name: string, size: number, partSize: number): { path: string; data: Buffer; v: Verification & { kind: "multipart-etag" } } {
  const data = randomBytes(size);
  const path = join(dir, name);
  writeFileSync(path, data);
  const bounds = [0];
  while (bounds.at(-1)! < size) bounds.push(Math.min(size, bounds.at(-1)! + partSize));
  const digests = bounds.slice(1).map((end, i) => md5(data.subarray(bounds[i]!, end)));
  const etag = multipartEtagOfDigests(digests);
  return { path, data, v: { kind: "multipart-etag", etag, count: digests.length, bounds } };
}

describe("multipart ETag, part by part", () => {
  // Parts of 2.5 blocks: boundaries fall inside blocks, so a block may belong to two parts.
  const size = 10 * BS + 123;
  const partSize = Math.floor(2.5 * BS);

  test("a later part is hashed while the parts before it are still missing; the check passes once all are in", async () => {
    const o = object("late-first.bin", size, partSize);
    const blocks = Math.ceil(size / BS);
    const d = new StreamedDigest(o.v.etag, size, o.path, BS, o.v, async () => false);
    const present = new Uint8Array(blocks);
    // The blocks of part 3 (bytes 5 BS .. 7.5 BS) arrive first.
    for (const b of [5, 6, 7]) present[b] = 1;
    d.advance(present);
    await d.idle();
    expect(d.partsHashed).toBe(1);
    // Then everything else, last block first.
    for (let b = blocks - 1; b >= 0; b--) {
      present[b] = 1;
      d.advance(present);
    }
    expect(await d.result()).toBe(true);
    expect(d.partsHashed).toBe(o.v.count);
  });

  test("a byte changed in one part after its blocks arrived in order: the check fails", async () => {
    const o = object("flipped.bin", size, partSize);
    o.data[3 * BS + 7]! ^= 0x40;
    writeFileSync(o.path, o.data);
    const d = new StreamedDigest(o.v.etag, size, o.path, BS, o.v, async () => false);
    const present = new Uint8Array(Math.ceil(size / BS));
    for (let b = 0; b < present.length; b++) {
      present[b] = 1;
      d.advance(present);
    }
    expect(await d.result()).toBe(false);
  });

  test("result() with nothing advanced hashes every part itself", async () => {
    const o = object("unadvanced.bin", size, partSize);
    const d = new StreamedDigest(o.v.etag, size, o.path, BS, o.v, async () => false);
    expect(await d.result()).toBe(true);
  });
});

describe("hashing threads", () => {
  test(`${HASH_THREADS} thread(s): many hash states at once, each fed in pieces, give each its own digest`, async () => {
    const o = object("pool.bin", 40 * BS, 40 * BS);
    const ranges = Array.from({ length: 12 }, (_, i) => [i * 3 * BS + i, (i * 3 + 2) * BS + 7 * i] as const);
    const got = await Promise.all(ranges.map(async ([a, b]) => {
      const h = rangeHasher("md5");
      try {
        const mid = Math.floor((a + b) / 2);
        await h.update(o.path, a, mid);
        await h.update(o.path, mid, b);
        return Buffer.from(await h.digest()).toString("hex");
      } finally {
        h.close();
      }
    }));
    expect(got).toEqual(ranges.map(([a, b]) => createHash("md5").update(o.data.subarray(a, b)).digest("hex")));
  });
});
