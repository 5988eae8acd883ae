/**
 * Keeps the read cache inside its limits: at most `cache_size` bytes of cached objects, and at
 * least `cache_min_free` free space on the filesystem that holds the cachepath.
 *
 * Is: one `Evictor` per cachepath, shared by every bucket cached there (the limits are for the
 * cachepath, i.e. the disk the operator protects), and one `BucketLedger` per bucket, which is
 * that bucket's `ObjectCache.hooks`. It evicts whole cached objects least recently read first
 * (a last-read time kept in memory and written to the index in one transaction per tick, never
 * one write per READ), and before them streamed copies nobody has open (the checked parts of
 * composite-checksum objects kept after their last close, least recently closed first). It runs in the background when
 * the cache comes within a margin of a limit (down to twice that margin), and synchronously
 * when a fetch would pass a limit. It never evicts a pinned object (open by the kernel, between
 * FUSE OPEN and RELEASE, or being fetched), nor anything in the workdir: workdir files are never
 * cached objects, and the start-up sweep never enters the workdir. At start it makes files and
 * index rows agree, since a crash can leave a file without its row or a row without its file.
 *
 * Is not: the fetch path (object-cache.ts), the workdir or its uploads (service/), or a
 * guarantee against other writers: what they write counts against the free-space floor only.
 *
 * Crash order: an eviction deletes the index rows first (one transaction), then the file. A
 * crash in between leaves a file without a row, removed by the next start's sweep.
 */
import type { Database, Statement } from "bun:sqlite";
import { readdirSync, renameSync, rmdirSync, statSync, statfsSync, unlinkSync } from "node:fs";
import { unlink } from "node:fs/promises";
import { basename, dirname } from "node:path";
import type { MinFree } from "../config/types.ts";
import { containedPath } from "./keys.ts";
import type { MetaIndex } from "./meta-index.ts";
import type { CacheHooks } from "./object-cache.ts";
import { TEMP_FILE_RE, tempNameFor } from "./cache-root.ts";
import { errMsg, fmtBytes, type Logger } from "../util/log.ts";

export interface CacheLimits {
  /** Most bytes of cached objects across the cachepath's buckets; undefined: no byte limit. */
  maxBytes: number | undefined;
  /** Free space to keep on the cache filesystem. */
  minFree: MinFree;
}

/** How often the background pass runs (last-read times and counters are written then too). */
const TICK_MS = 1000;
/** Most objects one background pass evicts (the event loop serves FUSE meanwhile). */
const TICK_MAX_OBJECTS = 2000;
/** How long `stored` rows wait in memory to be written together. */
const STORED_FLUSH_MS = 50;
/** Candidates read from the index per query while evicting. */
const BATCH = 64;

/** Headroom the background pass keeps below a limit of `limit` bytes: 5 %, at most 1 GiB. */
export function marginFor(limit: number): number {
  return Math.min(1024 ** 3, Math.floor(limit * 0.05));
}

export interface FsSpace {
  totalBytes: number;
  freeBytes: number;
  minFreeBytes: number;
}

/** Size, free space (what unprivileged writers may use, as df shows) and the floor in bytes. */
export function fsSpace(path: string, minFree: MinFree): FsSpace | undefined {
  try {
    const s = statfsSync(path);
    const totalBytes = s.blocks * s.bsize;
    const minFreeBytes = "percent" in minFree ? Math.ceil((totalBytes * minFree.percent) / 100) : minFree.bytes;
    return { totalBytes, freeBytes: s.bavail * s.bsize, minFreeBytes };
  } catch {
    return undefined;
  }
}

export interface LedgerOptions {
  bucket: string;
  db: Database;
  index: MetaIndex;
  /** The bucket's object cache directory (`<cachepath>/.<bucket>`). */
  root: string;
  /** Workdir relative to the bucket root, or undefined. */
  workdir: string | undefined;
  log: Logger;
  /**
   * Discard streamed copies nobody has open (kept checked parts, least recently closed first)
   * until `bytes` are freed; returns the bytes they had reserved.
   */
  dropIdle: (bytes: number) => number;
}

interface Candidate {
  key: string;
  size: number;
  read_ms: number;
}

export class Evictor {
  private ledgers: BucketLedger[] = [];
  /** Bytes promised to fetches under way (counted in full until they end). */
  private reserved = 0;
  private timer: Timer | undefined;
  private lastOverWarn = 0;

  constructor(
    readonly cachePath: string,
    readonly limits: CacheLimits,
    private log: Logger,
  ) {}

  /** Add one bucket's cache: its files and rows are made to agree now (start-up sweep). */
  attach(o: LedgerOptions): BucketLedger {
    const l = new BucketLedger(this, o);
    this.ledgers.push(l);
    return l;
  }

  /** Bytes of evicted files whose unlink is still under way (already free, for our sums). */
  private unlinking = 0;

  private unlinks = new Set<Promise<void>>();

  unlinkLater(path: string, size: number, log: Logger): void {
    this.unlinking += size;
    const p: Promise<void> = unlink(path)
      .catch((err: unknown) => log.warn(`cannot remove evicted file ${path}: ${errMsg(err)}`))
      .finally(() => {
        this.unlinking -= size;
        this.unlinks.delete(p);
      });
    this.unlinks.add(p);
  }

  /** A bucket's index is closing: write what its ledger holds in memory, and forget it. */
  detach(l: BucketLedger): void {
    l.flush();
    this.ledgers = this.ledgers.filter((x) => x !== l);
  }

  /** Start the background pass. */
  start(): void {
    this.timer ??= setInterval(() => this.tick(), TICK_MS);
    this.tick();
  }

  /** Stop the background pass and write what is still in memory (last-read times, counters). */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const l of this.ledgers) l.flush();
  }

  get usedBytes(): number {
    let n = 0;
    for (const l of this.ledgers) n += l.bytes;
    return n;
  }

  /**
   * How many bytes must go so that `extra` more bytes fit with `margins` margins of headroom
   * under both limits (0 or less: nothing to do).
   */
  private shortfall(extra: number, margins: number): number {
    const { maxBytes, minFree } = this.limits;
    let need = -Infinity;
    if (maxBytes !== undefined) need = this.usedBytes + this.reserved + extra - (maxBytes - margins * marginFor(maxBytes));
    const fs = fsSpace(this.cachePath, minFree);
    // Reservations are counted in full although their written part is already out of freeBytes:
    // conservative while fetches run, exact once they end.
    if (fs && fs.minFreeBytes > 0) need = Math.max(need, fs.minFreeBytes + margins * marginFor(fs.totalBytes) - (fs.freeBytes + this.unlinking - this.reserved - extra));
    return need;
  }

  private syncMargin(): number {
    const { maxBytes } = this.limits;
    return maxBytes !== undefined ? marginFor(maxBytes) : 1024 ** 3;
  }

  /** Before a fetch of `size` bytes: evict synchronously what must go for it to fit. */
  reserve(size: number): () => void {
    const need = this.shortfall(size, 0);
    if (need > 0) {
      // Down to one margin under the limits, so the next fetches need not evict again at once.
      // A cache far over its limits (cache_size lowered, the workdir grew) is brought down by
      // the background pass in steps: a fetch pays for its own size (and a margin) only.
      const want = Math.max(need, this.shortfall(size, 1));
      const freed = this.evict(Math.min(want, size + this.syncMargin()));
      if (freed < need && Date.now() - this.lastOverWarn > 60_000) {
        this.lastOverWarn = Date.now();
        this.log.warn(
          `cache in ${this.cachePath} goes over its limits by ${fmtBytes(need - freed)}: everything left is open ` +
            `or being fetched (${this.describe()})`,
        );
      }
    }
    this.reserved += size;
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      this.reserved -= size;
    };
  }

  /** A cache write hit ENOSPC: evict at least `size` bytes (limits aside); the bytes freed, once they are. */
  async evictForSpace(size: number): Promise<number> {
    const freed = this.evict(size);
    await Promise.all(this.unlinks);
    if (freed > 0) this.log.warn(`the cache filesystem of ${this.cachePath} is full: evicted ${fmtBytes(freed)} to retry a fetch`);
    return freed;
  }

  /** Evict idle streamed downloads, then whole objects, least recently read first, until `bytes` are freed. */
  private evict(bytes: number, maxObjects = Infinity): number {
    let count = 0;
    let freed = 0;
    for (const l of this.ledgers) if (freed < bytes) freed += l.dropIdle(bytes - freed);
    if (freed >= bytes) return freed;
    const cursors = this.ledgers.map((l) => l.oldest());
    const heads = cursors.map((c) => c.next());
    while (freed < bytes && count++ < maxObjects) {
      let best = -1;
      for (let i = 0; i < heads.length; i++) {
        const h = heads[i]!;
        if (h.done) continue;
        const b = best < 0 ? undefined : heads[best]!;
        if (!b || b.done || h.value.read_ms < b.value.read_ms) best = i;
      }
      if (best < 0) break;
      const h = heads[best]!;
      if (h.done) break;
      freed += this.ledgers[best]!.evict(h.value.key, h.value.size);
      heads[best] = cursors[best]!.next();
    }
    for (const c of cursors) c.return(undefined);
    return freed;
  }

  /** The background pass: write batched state, and evict when within a margin of a limit. */
  tick(): void {
    try {
      for (const l of this.ledgers) l.flush();
      if (this.shortfall(0, 1) <= 0) return;
      const before = this.ledgers.reduce((n, l) => n + l.evictionsThisRun, 0);
      const freed = this.evict(this.shortfall(0, 2), TICK_MAX_OBJECTS);
      const n = this.ledgers.reduce((m, l) => m + l.evictionsThisRun, 0) - before;
      if (n > 0) this.log.info(`evicted ${n} cached objects (${fmtBytes(freed)}): ${this.describe()}`);
      for (const l of this.ledgers) l.flush();
    } catch (err) {
      this.log.warn(`cache eviction failed: ${errMsg(err)}`);
    }
  }

  /** "cache 90 MiB of 100 MiB, 12 GiB free (floor 7.8 GiB)" for log lines. */
  private describe(): string {
    const { maxBytes, minFree } = this.limits;
    const fs = fsSpace(this.cachePath, minFree);
    const limit = maxBytes !== undefined ? ` of ${fmtBytes(maxBytes)}` : "";
    const free = fs ? `, ${fmtBytes(fs.freeBytes)} free (floor ${fmtBytes(fs.minFreeBytes)})` : "";
    return `cache ${fmtBytes(this.usedBytes)}${limit}${free}`;
  }
}

/**
 * One bucket's part of the cache: its cached objects' sizes and last-read times (table
 * `cache_lru`), its pins, and its eviction counters (table `cache_stats`).
 */
export class BucketLedger implements CacheHooks {
  /** Bytes and count of this bucket's cached objects. */
  bytes = 0;
  objects = 0;
  /** Evictions in every run (persisted), and in this run. */
  evictions = 0;
  evictedBytes = 0;
  evictionsThisRun = 0;
  private statsDirty = false;
  private pins = new Map<string, number>();
  private touched = new Map<string, number>();
  /** Evicted keys whose rows could not be deleted yet (disk full). */
  private pendingDrops = new Set<string>();
  private q: {
    size: Statement<{ size: number }, [string]>;
    put: Statement<unknown, [string, number, number]>;
    del: Statement<unknown, [string]>;
    touch: Statement<unknown, [number, string]>;
    after: Statement<Candidate, [number, string, number]>;
    stat: Statement<unknown, [string, number]>;
  };
  private dropTx: (key: string) => void;
  private touchTx: (entries: [string, number][]) => void;
  /** `stored` rows not written yet (key -> size, time), and the timer that writes them. */
  private pendingStored = new Map<string, { size: number; ms: number }>();
  private storedTimer: Timer | undefined;
  private storedTx: (rows: [string, { size: number; ms: number }][]) => void;

  constructor(
    private ev: Evictor,
    private o: LedgerOptions,
  ) {
    const db = o.db;
    db.run(`CREATE TABLE IF NOT EXISTS cache_lru (key TEXT PRIMARY KEY, size INTEGER NOT NULL,
      read_ms INTEGER NOT NULL) WITHOUT ROWID`);
    db.run("CREATE INDEX IF NOT EXISTS cache_lru_read ON cache_lru (read_ms, key)");
    db.run("CREATE TABLE IF NOT EXISTS cache_stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID");
    this.q = {
      size: db.query("SELECT size FROM cache_lru WHERE key = ?1"),
      put: db.query("INSERT OR REPLACE INTO cache_lru (key, size, read_ms) VALUES (?1, ?2, ?3)"),
      del: db.query("DELETE FROM cache_lru WHERE key = ?1"),
      touch: db.query("UPDATE cache_lru SET read_ms = ?1 WHERE key = ?2"),
      after: db.query(`SELECT key, size, read_ms FROM cache_lru WHERE read_ms > ?1 OR (read_ms = ?1 AND key > ?2)
        ORDER BY read_ms, key LIMIT ?3`),
      stat: db.query("INSERT OR REPLACE INTO cache_stats (name, value) VALUES (?1, ?2)"),
    };
    this.dropTx = db.transaction((key: string) => {
      o.index.dropCached(key);
      this.q.del.run(key);
      this.writeStats();
    });
    this.touchTx = db.transaction((entries: [string, number][]) => {
      for (const [key, ms] of entries) this.q.touch.run(ms, key);
    });
    this.storedTx = db.transaction((rows: [string, { size: number; ms: number }][]) => {
      for (const [key, r] of rows) this.q.put.run(key, r.size, r.ms);
    });
    this.reconcile();
    const use = readCacheUse(db);
    this.bytes = use.bytes;
    this.objects = use.objects;
    this.evictions = use.evictions;
    this.evictedBytes = use.evictedBytes;
  }

  // ---- CacheHooks (called by ObjectCache) ---------------------------------------------

  pin(key: string): void {
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
  }

  unpin(key: string): void {
    const n = (this.pins.get(key) ?? 0) - 1;
    if (n > 0) this.pins.set(key, n);
    else this.pins.delete(key);
  }

  touch(key: string): void {
    this.touched.set(key, Date.now());
  }

  reserve(size: number): () => void {
    return this.ev.reserve(size);
  }

  stored(key: string, size: number): void {
    // A key evicted with its rows still pending had its bytes counted off already.
    const old = this.pendingDrops.has(key) ? undefined : (this.pendingStored.get(key) ?? this.q.size.get(key));
    if (old) {
      this.bytes -= old.size;
      this.objects--;
    }
    // Written with the next batch (STORED_FLUSH_MS), in one transaction: one per fetch cost
    // more than the rest of a small object's bookkeeping.
    this.pendingStored.set(key, { size, ms: Date.now() });
    this.storedTimer ??= setTimeout(() => {
      this.storedTimer = undefined;
      this.flushStored();
    }, STORED_FLUSH_MS);
    this.pendingDrops.delete(key); // fetched again: the new rows stay
    this.touched.delete(key);
    this.bytes += size;
    this.objects++;
  }

  async noSpace(size: number): Promise<boolean> {
    return (await this.ev.evictForSpace(size)) > 0;
  }

  // ---- for the Evictor ----------------------------------------------------------------

  dropIdle(bytes: number): number {
    return this.o.dropIdle(bytes);
  }

  /** Eviction candidates, least recently read first; pinned and workdir keys are skipped. */
  *oldest(): Generator<Candidate, void, undefined> {
    this.flushStored();
    this.flushTouches();
    let lastMs = Number.MIN_SAFE_INTEGER;
    let lastKey = "";
    for (;;) {
      const rows = this.q.after.all(lastMs, lastKey, BATCH);
      if (rows.length === 0) return;
      for (const r of rows) {
        lastMs = r.read_ms;
        lastKey = r.key;
        if (this.pins.has(r.key) || this.pendingDrops.has(r.key) || this.inWorkdir(r.key)) continue;
        yield r;
      }
    }
  }

  /** Evict one object: rows first (one transaction), then the file. Returns its size. */
  evict(key: string, size: number): number {
    this.pendingStored.delete(key); // never written after its eviction
    this.evictions++;
    this.evictionsThisRun++;
    this.evictedBytes += size;
    try {
      this.dropTx(key); // the counters go in the same transaction: status sees them at once
    } catch (err) {
      this.statsDirty = true;
      // A full disk can refuse even a DELETE (the WAL grows): remove the file anyway, which
      // frees the space, and drop the rows at the next flush. A crash before that leaves rows
      // without a file, which the next start removes (and a read meanwhile fetches again).
      this.pendingDrops.add(key);
      this.o.log.debug(`evicting ${key}: index update deferred (${errMsg(err)})`);
    }
    // Renamed aside now (cheap), removed on the threadpool: freeing a large file's blocks takes
    // tens of ms on ext4 with discard, which must not stall the loop that answers FUSE. The
    // temp name means a crash before the unlink leaves a file the next start's sweep removes,
    // and a fetch of the same key meanwhile can never be the file that gets removed.
    const path = containedPath(this.o.root, key);
    const doomed = `${dirname(path)}/${tempNameFor(basename(path))}`;
    try {
      renameSync(path, doomed);
      this.ev.unlinkLater(doomed, size, this.o.log);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.o.log.warn(`cannot remove evicted ${key}: ${errMsg(err)}`);
    }
    this.touched.delete(key);
    this.bytes -= size;
    this.objects--;
    this.o.log.debug(`evicted ${key} (${fmtBytes(size)})`);
    return size;
  }

  /** Write what a full disk deferred (evicted rows, counters) and the batched last-read times. */
  flush(): void {
    try {
      for (const key of this.pendingDrops) {
        this.dropTx(key);
        this.pendingDrops.delete(key);
      }
      if (this.statsDirty) {
        this.writeStats();
        this.statsDirty = false;
      }
    } catch (err) {
      this.o.log.debug(`cache index update deferred again: ${errMsg(err)}`);
    }
    this.flushStored();
    this.flushTouches();
  }

  /** Write the batched `stored` rows; on a full disk they stay in memory for the next try. */
  private flushStored(): void {
    if (this.storedTimer) clearTimeout(this.storedTimer);
    this.storedTimer = undefined;
    if (this.pendingStored.size === 0) return;
    const rows = [...this.pendingStored];
    try {
      this.storedTx(rows);
    } catch (err) {
      this.o.log.debug(`cache rows not written yet: ${errMsg(err)}`);
      return;
    }
    for (const [key, r] of rows) if (this.pendingStored.get(key) === r) this.pendingStored.delete(key);
  }

  private writeStats(): void {
    this.q.stat.run("evictions", this.evictions);
    this.q.stat.run("evicted_bytes", this.evictedBytes);
  }

  /** Write the batched last-read times; on a full disk they stay in memory for the next try. */
  private flushTouches(): void {
    if (this.touched.size === 0) return;
    const entries = [...this.touched];
    try {
      this.touchTx(entries);
    } catch (err) {
      this.o.log.debug(`last-read times not written yet: ${errMsg(err)}`);
      return;
    }
    for (const [key, ms] of entries) if (this.touched.get(key) === ms) this.touched.delete(key);
  }

  private inWorkdir(rel: string): boolean {
    const w = this.o.workdir;
    return w !== undefined && (rel === w || rel.startsWith(w + "/"));
  }

  private isWorkdirAncestor(rel: string): boolean {
    const w = this.o.workdir;
    return w !== undefined && w.startsWith(rel + "/");
  }

  /**
   * Start of a run: every cache file has its row and every row its file. Removes temp files
   * (downloads a crash interrupted), files without a row or of the wrong size, rows without a
   * file, and empty directories; never enters the workdir. Nothing is being fetched yet.
   */
  private reconcile(): void {
    const t0 = performance.now();
    const rows = new Map(this.o.index.allCached().map((r) => [r.key, r.size]));
    // Partial files whose checked parts the index keeps (object-cache.ts counts them in the bound).
    const kept = new Set(this.o.index.allKeptParts().map((k) => k.file));
    const seen = new Map<string, number>(); // key -> ctime, a stand-in for a missing last-read time
    let temps = 0;
    let orphans = 0;
    const walk = (dir: string, rel: string): boolean => {
      let ents;
      try {
        ents = readdirSync(dir, { withFileTypes: true });
      } catch {
        return false;
      }
      let left = ents.length;
      for (const d of ents) {
        const r = rel === "" ? d.name : `${rel}/${d.name}`;
        const full = `${dir}/${d.name}`;
        // The workdir and the directories above it are not the read cache's, whatever is in
        // their place (a symlink planted there is refused by the lifecycle, never removed here).
        if (this.inWorkdir(r) || (this.isWorkdirAncestor(r) && !d.isDirectory())) continue;
        if (d.isDirectory()) {
          if (walk(full, r) && !this.isWorkdirAncestor(r)) {
            try {
              rmdirSync(full);
              left--;
            } catch {
              /* not empty after all */
            }
          }
          continue;
        }
        const want = rows.get(r);
        const temp = TEMP_FILE_RE.test(d.name);
        if (temp && d.isFile() && kept.has(r)) continue;
        if (d.isFile() && !temp && want !== undefined) {
          try {
            const st = statSync(full);
            if (st.size === want) {
              seen.set(r, Math.round(st.ctimeMs));
              continue;
            }
          } catch {
            /* vanished: treated as missing */
          }
        }
        try {
          unlinkSync(full);
          left--;
          if (temp) temps++;
          else orphans++;
        } catch (err) {
          this.o.log.warn(`cannot remove stale cache file ${full}: ${errMsg(err)}`);
        }
      }
      return left === 0;
    };
    walk(this.o.root, "");
    let missing = 0;
    const fix = this.o.db.transaction(() => {
      for (const key of rows.keys()) {
        if (seen.has(key)) continue;
        this.o.index.dropCached(key);
        missing++;
      }
      const lru = new Map(
        this.o.db.query<{ key: string; size: number }, []>("SELECT key, size FROM cache_lru").all().map((r) => [r.key, r.size]),
      );
      for (const key of lru.keys()) if (!seen.has(key)) this.q.del.run(key);
      for (const [key, ctime] of seen) {
        const size = rows.get(key)!;
        const had = lru.get(key);
        if (had === undefined) this.q.put.run(key, size, ctime);
        else if (had !== size) this.o.db.query("UPDATE cache_lru SET size = ?1 WHERE key = ?2").run(size, key);
      }
    });
    fix();
    const ms = (performance.now() - t0).toFixed(0);
    const what = `${seen.size} cached objects checked in ${ms} ms`;
    if (temps + orphans + missing > 0) {
      this.o.log.info(`${what}: removed ${temps} unfinished downloads, ${orphans} files without an index row, ${missing} rows without a file`);
    } else this.o.log.debug(what);
  }
}

export interface CacheUse {
  bytes: number;
  objects: number;
  evictions: number;
  evictedBytes: number;
  /** Streamed objects kept incomplete after their last close (`cache_parts`), and the checked bytes they hold. */
  keptObjects: number;
  keptBytes: number;
}

/** What one bucket's index says about its cache (zeros for an index from before eviction existed). */
export function readCacheUse(db: Database): CacheUse {
  const has = (t: string) =>
    db.query<{ n: number }, [string]>("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?1").get(t)!.n > 0;
  const out: CacheUse = { bytes: 0, objects: 0, evictions: 0, evictedBytes: 0, keptObjects: 0, keptBytes: 0 };
  if (has("cache_lru")) {
    const r = db.query<{ n: number; b: number }, []>("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM cache_lru").get()!;
    out.objects = r.n;
    out.bytes = r.b;
  }
  if (has("cache_parts")) {
    const r = db.query<{ n: number; b: number }, []>("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM cache_parts").get()!;
    out.keptObjects = r.n;
    out.keptBytes = r.b;
  }
  if (has("cache_stats")) {
    for (const r of db.query<{ name: string; value: number }, []>("SELECT name, value FROM cache_stats").all()) {
      if (r.name === "evictions") out.evictions = r.value;
      if (r.name === "evicted_bytes") out.evictedBytes = r.value;
    }
  }
  return out;
}
