/**
 * The read-ahead policy (src/cache/read-ahead.ts) as pure logic: what a sequence of READs makes
 * it fetch. No store, no files.
 */
import { describe, expect, test } from "bun:test";
import { MAX_STRETCH, ReadAhead, STRETCH_TTFB_MS, stretchFor } from "../../src/cache/read-ahead.ts";

const MiB = 1024 * 1024;
const policy = () => new ReadAhead({ chunkBlocks: 16, maxWindowBlocks: 64 }, MiB);

describe("read-ahead policy", () => {
  test("the first READ fetches only its own blocks, whatever its offset", () => {
    expect(policy().observe(0, 100)).toEqual({ sequential: false, aheadBlocks: 0, unitBlocks: 1 });
    expect(policy().observe(700 * MiB, 64 * 1024)).toEqual({ sequential: false, aheadBlocks: 0, unitBlocks: 1 });
  });

  test("each READ that continues the scan doubles the window, from 2 blocks up to read_ahead", () => {
    const ra = policy();
    ra.observe(0, MiB);
    const windows: number[] = [];
    const units: number[] = [];
    for (let off = MiB; off < 12 * MiB; off += MiB) {
      const s = ra.observe(off, MiB);
      expect(s.sequential).toBe(true);
      windows.push(s.aheadBlocks);
      units.push(s.unitBlocks);
    }
    expect(windows).toEqual([2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64]);
    // GETs as large as the window, at most a chunk.
    expect(units).toEqual([2, 4, 8, 16, 16, 16, 16, 16, 16, 16, 16]);
  });

  test("a random reader's READs each fetch only their blocks, and a jump resets a grown window", () => {
    const ra = policy();
    const offsets = [512 * MiB, 3 * MiB, 900 * MiB, 100 * MiB, 40 * MiB];
    for (const off of offsets) expect(ra.observe(off, 64 * 1024)).toEqual({ sequential: false, aheadBlocks: 0, unitBlocks: 1 });
    for (let off = 0; off < 8 * MiB; off += MiB) ra.observe(off, MiB);
    expect(ra.window).toBeGreaterThan(8);
    expect(ra.observe(500 * MiB, MiB).aheadBlocks).toBe(0);
    expect(ra.window).toBe(0);
    // ...and grows again from 2 when the reader goes on from there.
    expect(ra.observe(501 * MiB, MiB).aheadBlocks).toBe(2);
  });

  test("an index query (small in-order reads of one region) reads nothing ahead, even across a block boundary", () => {
    const ra = policy();
    let ahead = 0;
    for (let off = 300 * MiB; off < 300 * MiB + 64 * 1024; off += 16 * 1024) ahead = Math.max(ahead, ra.observe(off, 16 * 1024).aheadBlocks);
    expect(ahead).toBe(0);
    // samtools: a BGZF block read as 4 KiB and then the rest, here straddling a block boundary,
    // then the next few BGZF blocks in order: well under a block read, so still no read-ahead.
    const sam = policy();
    let off = 41 * MiB - 20 * 1024;
    for (const len of [4096, 60 * 1024, 4096, 50 * 1024, 4096, 58 * 1024]) {
      ahead = Math.max(ahead, sam.observe(off, len).aheadBlocks);
      off += len;
    }
    expect(ahead).toBe(0);
  });

  test("small sequential READs grow the window per block read, not per READ", () => {
    const ra = policy();
    const seen: number[] = [];
    for (let off = 0; off < 5 * MiB; off += 128 * 1024) seen.push(ra.observe(off, 128 * 1024).aheadBlocks);
    // Block 0 (8 READs): nothing ahead; the READs reaching blocks 1, 2, 3, 4 double it.
    expect(seen.slice(0, 8)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect([seen[8], seen[16], seen[24], seen[32]]).toEqual([2, 4, 8, 16]);
    expect(seen[39]).toBe(16);
  });

  test("READs arriving out of order inside the window keep the scan sequential and the window as it is", () => {
    const ra = policy();
    ra.observe(MiB, MiB); // the second READ arrived first
    expect(ra.observe(0, MiB)).toMatchObject({ sequential: true, aheadBlocks: 0 });
    expect(ra.observe(3 * MiB, MiB)).toMatchObject({ sequential: true, aheadBlocks: 2 });
    expect(ra.observe(2 * MiB, MiB)).toMatchObject({ sequential: true, aheadBlocks: 2 });
  });

  test("a far link stretches the window beyond read_ahead; a near one does not", () => {
    expect(stretchFor(undefined)).toBe(1);
    expect(stretchFor(2)).toBe(1);
    expect(stretchFor(STRETCH_TTFB_MS - 1)).toBe(1);
    expect(stretchFor(STRETCH_TTFB_MS)).toBe(2);
    expect(stretchFor(100)).toBe(MAX_STRETCH);
    expect(stretchFor(5000)).toBe(MAX_STRETCH);
    const ra = policy();
    ra.stretch = stretchFor(100);
    ra.observe(0, MiB);
    let w = 0;
    for (let off = MiB; off < 20 * MiB; off += MiB) w = ra.observe(off, MiB).aheadBlocks;
    expect(w).toBe(64 * MAX_STRETCH);
  });
});
