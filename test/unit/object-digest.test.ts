/**
 * The whole-object check of a streamed copy (cache/object-digest.ts) on real files, with the
 * hashing threads of store/hashing.ts: a multipart ETag is checked part by part, and a large
 * full-object CRC64NVME in segments joined at the end, each part or segment hashed as soon as
 * its own blocks are in, whatever the order they arrive in.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CRC_SEGMENT, StreamedDigest } from "../../src/cache/object-digest.ts";
import { HASH_THREADS, rangeHasher } from "../../src/store/hashing.ts";
import { multipartEtagOfDigests, newHasher, toBase64, type Verification } from "../../src/store/checksum.ts";

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
    expect(d.segmentsHashed).toBe(1);
    // Then everything else, last block first.
    for (let b = blocks - 1; b >= 0; b--) {
      present[b] = 1;
      d.advance(present);
    }
    expect(await d.result()).toBe(true);
    expect(d.segmentsHashed).toBe(o.v.count);
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

describe("full-object CRC64NVME in segments", () => {
  const MiB = 1024 * 1024;
  // Three segments, the last short and not block-aligned.
  const size = 2 * CRC_SEGMENT + MiB + 77;
  const blocks = Math.ceil(size / MiB);
  const data = randomBytes(size);
  const path = join(dir, "crc64.bin");
  writeFileSync(path, data);
  const h = newHasher("crc64nvme");
  h.update(data);
  const v: Verification = { kind: "full", algorithm: "crc64nvme", value: toBase64(h.digest()) };

  test("the second segment is hashed before the first arrives; the joined CRC matches", async () => {
    const d = new StreamedDigest("etag", size, path, MiB, v, async () => false);
    const present = new Uint8Array(blocks);
    for (let b = CRC_SEGMENT / MiB; b < (2 * CRC_SEGMENT) / MiB; b++) present[b] = 1;
    d.advance(present);
    await d.idle();
    expect(d.segmentsHashed).toBe(1);
    present.fill(1);
    d.advance(present);
    expect(await d.result()).toBe(true);
    expect(d.segmentsHashed).toBe(3);
  });

  test("a byte changed in the last segment: the joined CRC does not match", async () => {
    const bad = Buffer.from(data);
    bad[size - 5]! ^= 1;
    const badPath = join(dir, "crc64-bad.bin");
    writeFileSync(badPath, bad);
    const d = new StreamedDigest("etag", size, badPath, MiB, v, async () => false);
    d.advance(new Uint8Array(blocks).fill(1));
    expect(await d.result()).toBe(false);
    rmSync(badPath);
  });

  test("an object of one segment or less is hashed in one pass, as before", async () => {
    const small = data.subarray(0, CRC_SEGMENT);
    const p = join(dir, "crc64-small.bin");
    writeFileSync(p, small);
    const hs = newHasher("crc64nvme");
    hs.update(small);
    const d = new StreamedDigest("etag", small.byteLength, p, MiB, { kind: "full", algorithm: "crc64nvme", value: toBase64(hs.digest()) }, async () => false);
    d.advance(new Uint8Array(CRC_SEGMENT / MiB).fill(1));
    expect(await d.result()).toBe(true);
    expect(d.segmentsHashed).toBe(0);
    rmSync(p);
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
