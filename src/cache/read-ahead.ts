/**
 * The read-ahead policy of a streamed object: how far ahead of a reader to fetch, and in GETs
 * of what size, from the READs it has made so far. Pure logic (no I/O, no clock).
 *
 * Is: a window that grows with evidence of sequential reading, as the kernel's does. The first
 * READ of an object fetches only the blocks it asks for (`head -c 100` of a 10 GiB object is
 * one 1 MiB GET). The evidence is blocks, not READs: once the scan has covered more than one
 * block, each READ that carries it into a new block doubles the window (2, 4, 8, ... blocks), up
 * to `maxWindowBlocks`; READs inside a block, however many, do not (samtools reads each BGZF
 * block as a 4 KiB READ and then the rest, so an index query makes many small in-order READs
 * that are not a scan). A READ elsewhere is random and resets the window to nothing, so a
 * reader that jumps around (an index query of a BAM file) fetches the blocks it touches.
 * GETs are as large as the window allows, up to `chunkBlocks`, aligned to their own size.
 * On a far link (slow time to first byte), a reader whose window reached its maximum may
 * stretch it: `stretchFor` says by how much, from the measured time to first byte, so the
 * window covers the link's bandwidth-delay product (see PartialObject, which also lets that
 * reader have more GETs in flight). Is not: the fetching itself (partial-object.ts), or the
 * process-wide bound on GETs (store/s3/request.ts), which every stretched window stays under.
 */

export interface ReadAheadLimits {
  /** Largest GET for a sequential reader, in blocks (read_chunk_size). */
  chunkBlocks: number;
  /** Largest window, in blocks (read_ahead), before any stretch. */
  maxWindowBlocks: number;
}

/** What to fetch for one READ. */
export interface ReadAheadStep {
  /** The READ continues a sequential scan. */
  sequential: boolean;
  /** Blocks to fetch beyond the READ's own (0 for a random or first READ). */
  aheadBlocks: number;
  /** Blocks per GET (a power of two ≤ chunkBlocks, or chunkBlocks), GETs aligned to it. */
  unitBlocks: number;
}

/** Time to first byte at which the window starts to stretch, and the largest stretch. */
export const STRETCH_TTFB_MS = 25;
export const MAX_STRETCH = 4;

/**
 * How many times read_ahead a sequential reader's window may reach when GETs take `ttfbMs` to
 * answer: 1 on a near link, up to MAX_STRETCH (one more per STRETCH_TTFB_MS of waiting).
 */
export function stretchFor(ttfbMs: number | undefined): number {
  if (ttfbMs === undefined || !(ttfbMs >= STRETCH_TTFB_MS)) return 1;
  return Math.min(MAX_STRETCH, 1 + Math.floor(ttfbMs / STRETCH_TTFB_MS));
}

export class ReadAhead {
  /** Blocks of read-ahead now (0: none yet, or a random reader). */
  window = 0;
  /** End of the furthest READ of the current scan (-1: no READ yet). */
  private lastEnd = -1;
  /** Start of the current scan: its lowest READ offset. */
  private scanStart = 0;
  /** How many times `maxWindowBlocks` the window may reach now (stretchFor). */
  stretch = 1;

  constructor(
    private limits: ReadAheadLimits,
    private blockSize: number,
  ) {}

  /** The window's ceiling now, in blocks. */
  get maxWindow(): number {
    return this.limits.maxWindowBlocks * this.stretch;
  }

  /**
   * One READ at [off, off+len). The kernel issues a sequential reader's READs several at a time
   * and they may arrive out of order, so a READ continues the scan when it starts inside the
   * window behind the furthest READ so far, or at most two blocks past it. Anything else starts
   * over: a random READ, fetched a block at a time.
   */
  observe(off: number, len: number): ReadAheadStep {
    const bs = this.blockSize;
    const end = off + Math.max(1, len);
    if (this.lastEnd < 0) {
      this.lastEnd = end;
      this.scanStart = off;
      return { sequential: false, aheadBlocks: 0, unitBlocks: 1 };
    }
    const behind = (this.window + 2) * bs;
    const sequential = off >= this.lastEnd - behind && off <= this.lastEnd + 2 * bs;
    if (!sequential) {
      this.window = 0;
      this.lastEnd = end;
      this.scanStart = off;
      return { sequential: false, aheadBlocks: 0, unitBlocks: 1 };
    }
    if (off < this.scanStart) this.scanStart = off;
    if (end > this.lastEnd) {
      const intoNewBlock = Math.floor((end - 1) / bs) > Math.floor((this.lastEnd - 1) / bs);
      if (intoNewBlock && end - this.scanStart > bs) this.window = Math.min(this.window === 0 ? 2 : this.window * 2, this.maxWindow);
      this.lastEnd = end;
    }
    return { sequential: true, aheadBlocks: this.window, unitBlocks: this.unit() };
  }

  /** GET size: the window's, rounded down to a power of two, at most a chunk. */
  private unit(): number {
    const c = this.limits.chunkBlocks;
    if (this.window >= c) return c;
    let u = 1;
    while (u * 2 <= this.window) u *= 2;
    return Math.min(u, c);
  }
}
