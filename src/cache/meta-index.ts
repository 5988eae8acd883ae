/**
 * The metadata half of the cache index: what S3 listed (per directory, with when) and which
 * objects are present in the local cache (with the ETag they were fetched at).
 *
 * Is: sqlite tables `meta_entries` (with `seen_ms`: when S3 last confirmed the entry),
 * `meta_dirs`, `meta_cached`, `cache_checks` (objects fetched, counted by what checked their
 * bytes; `none` = unverified), `cache_parts` (the block map of a streamed object kept
 * incomplete: its partial file and the parts in it that matched their own checksums, valid
 * while the ETag is unchanged) and typed queries over them. Single rows learned one at a time
 * (`putEntry`, `putCached`, `countCheck`: one each per fetched object) are written in batches:
 * kept in memory, where every query of this index sees them, and written in one transaction
 * FLUSH_MS later, before any query that reads many rows, and by `flush()` (the daemon calls it
 * before closing the index). A row lost with the process only means a fetch or a HEAD again.
 * `meta_entries`/`meta_dirs` are
 * used by fs/namespace.ts only, `meta_cached` and `cache_parts` by cache/object-cache.ts only
 * (and the start-up sweeps, which keep the files `cache_parts` names).
 * Is not: the file cache itself (object-cache.ts) or freshness policy (fs/namespace.ts). Paths are bucket-relative without leading "/": "" is the root, "a/b" a child.
 */
import type { Database, Statement } from "bun:sqlite";

export interface IndexEntry {
  dir: string;
  name: string;
  isDir: boolean;
  size: number;
  mtimeMs: number;
  etag: string;
  /** Permission bits from object metadata, when known. */
  mode: number | null;
}

/** An entry as stored, with when S3 last confirmed it (a listing, a HEAD or a GET). */
export interface KnownEntry extends IndexEntry {
  seenMs: number;
}

export interface CachedObject {
  key: string;
  etag: string;
  size: number;
  mtimeMs: number;
  mode: number | null;
}

/**
 * A streamed object kept incomplete after its last close (object-cache.ts): its partial file
 * (relative to the bucket's cache directory) holds parts that each matched their own checksum
 * when fetched (part number -> that checksum, base64).
 */
export interface KeptParts {
  key: string;
  etag: string;
  size: number;
  mtimeMs: number;
  file: string;
  parts: Record<number, string>;
  /** Bytes of those parts (what the file holds). */
  bytes: number;
  /** When its last reader closed it (eviction order). */
  closedMs: number;
}

type PartsRow = { key: string; etag: string; size: number; mtime_ms: number; file: string; parts: string; bytes: number; closed_ms: number };
const toKept = (r: PartsRow): KeptParts => ({
  key: r.key, etag: r.etag, size: r.size, mtimeMs: r.mtime_ms, file: r.file, parts: JSON.parse(r.parts) as Record<number, string>, bytes: r.bytes, closedMs: r.closed_ms,
});

type Row = {
  dir: string; name: string; is_dir: number; size: number; mtime_ms: number; etag: string; mode: number | null; seen_ms: number;
};

const toEntry = (r: Row): KnownEntry => ({
  dir: r.dir, name: r.name, isDir: r.is_dir === 1, size: r.size, mtimeMs: r.mtime_ms, etag: r.etag, mode: r.mode, seenMs: r.seen_ms,
});

/** How long single-row writes wait in memory to be written together. */
export const FLUSH_MS = 50;

const entryKey = (dir: string, name: string): string => `${dir}\0${name}`;

export class MetaIndex {
  /** Rows written by putEntry / putCached and not yet in the database (with their time). */
  private pendingEntries = new Map<string, { e: IndexEntry; now: number }>();
  private pendingCached = new Map<string, { c: CachedObject; now: number }>();
  private pendingChecks = new Map<string, number>();
  private pendingParts = new Map<string, KeptParts>();
  private flushTimer: Timer | undefined;
  private flushTx: () => void;
  /** Transactions that wrote batched rows (for the profile: SQLite writes per object). */
  flushes = 0;
  private q: {
    entry: Statement<Row, [string, string]>;
    list: Statement<Row, [string]>;
    after: Statement<Row, [string, string, number]>;
    dirListed: Statement<{ listed_ms: number }, [string]>;
    delDir: Statement<unknown, [string]>;
    delEntry: Statement<unknown, [string, string]>;
    put: Statement<unknown, [string, string, number, number, number, string, number | null, number]>;
    markDir: Statement<unknown, [string, number]>;
    cached: Statement<{ key: string; etag: string; size: number; mtime_ms: number; mode: number | null }, [string]>;
    putCached: Statement<unknown, [string, string, number, number, number | null, number]>;
    countCheck: Statement<unknown, [string, number]>;
    parts: Statement<PartsRow, [string]>;
    putParts: Statement<unknown, [string, string, number, number, string, string, number, number]>;
    delParts: Statement<unknown, [string]>;
  };
  private replaceTx: (dir: string, entries: IndexEntry[], now: number) => void;

  constructor(private db: Database) {
    db.run(`CREATE TABLE IF NOT EXISTS meta_entries (
      dir TEXT NOT NULL, name TEXT NOT NULL, is_dir INTEGER NOT NULL, size INTEGER NOT NULL,
      mtime_ms INTEGER NOT NULL, etag TEXT NOT NULL, mode INTEGER, seen_ms INTEGER NOT NULL,
      PRIMARY KEY (dir, name)) WITHOUT ROWID`);
    db.run(`CREATE TABLE IF NOT EXISTS meta_dirs (dir TEXT PRIMARY KEY, listed_ms INTEGER NOT NULL) WITHOUT ROWID`);
    db.run(`CREATE TABLE IF NOT EXISTS meta_cached (key TEXT PRIMARY KEY, etag TEXT NOT NULL, size INTEGER NOT NULL,
      mtime_ms INTEGER NOT NULL, mode INTEGER, fetched_ms INTEGER NOT NULL) WITHOUT ROWID`);
    db.run(`CREATE TABLE IF NOT EXISTS cache_checks (kind TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID`);
    db.run(`CREATE TABLE IF NOT EXISTS cache_parts (key TEXT PRIMARY KEY, etag TEXT NOT NULL, size INTEGER NOT NULL,
      mtime_ms INTEGER NOT NULL, file TEXT NOT NULL, parts TEXT NOT NULL, bytes INTEGER NOT NULL, closed_ms INTEGER NOT NULL) WITHOUT ROWID`);
    const cols = "dir, name, is_dir, size, mtime_ms, etag, mode";
    this.q = {
      entry: db.query(`SELECT ${cols}, seen_ms FROM meta_entries WHERE dir = ?1 AND name = ?2`),
      list: db.query(`SELECT ${cols}, seen_ms FROM meta_entries WHERE dir = ?1 ORDER BY name`),
      after: db.query(`SELECT ${cols}, seen_ms FROM meta_entries WHERE dir = ?1 AND name > ?2 ORDER BY name LIMIT ?3`),
      dirListed: db.query(`SELECT listed_ms FROM meta_dirs WHERE dir = ?1`),
      delDir: db.query(`DELETE FROM meta_entries WHERE dir = ?1`),
      delEntry: db.query(`DELETE FROM meta_entries WHERE dir = ?1 AND name = ?2`),
      put: db.query(`INSERT OR REPLACE INTO meta_entries (${cols}, seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)`),
      markDir: db.query(`INSERT OR REPLACE INTO meta_dirs (dir, listed_ms) VALUES (?1, ?2)`),
      cached: db.query(`SELECT key, etag, size, mtime_ms, mode FROM meta_cached WHERE key = ?1`),
      countCheck: db.query("INSERT INTO cache_checks (kind, n) VALUES (?1, ?2) ON CONFLICT(kind) DO UPDATE SET n = n + ?2"),
      putCached: db.query(`INSERT OR REPLACE INTO meta_cached (key, etag, size, mtime_ms, mode, fetched_ms)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6)`),
      parts: db.query("SELECT key, etag, size, mtime_ms, file, parts, bytes, closed_ms FROM cache_parts WHERE key = ?1"),
      putParts: db.query(`INSERT OR REPLACE INTO cache_parts (key, etag, size, mtime_ms, file, parts, bytes, closed_ms)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)`),
      delParts: db.query("DELETE FROM cache_parts WHERE key = ?1"),
    };
    this.flushTx = db.transaction(() => {
      for (const { e, now } of this.pendingEntries.values()) this.insert(e, now);
      for (const { c, now } of this.pendingCached.values()) this.q.putCached.run(c.key, c.etag, c.size, Math.round(c.mtimeMs), c.mode, now);
      for (const [kind, n] of this.pendingChecks) this.q.countCheck.run(kind, n);
      for (const k of this.pendingParts.values()) {
        this.q.putParts.run(k.key, k.etag, k.size, Math.round(k.mtimeMs), k.file, JSON.stringify(k.parts), k.bytes, k.closedMs);
      }
    });
    this.replaceTx = db.transaction((dir: string, entries: IndexEntry[], now: number) => {
      this.q.delDir.run(dir);
      for (const e of entries) this.insert(e, now);
      this.q.markDir.run(dir, now);
    });
  }

  private insert(e: IndexEntry, now: number): void {
    this.q.put.run(e.dir, e.name, e.isDir ? 1 : 0, e.size, Math.round(e.mtimeMs), e.etag, e.mode, now);
  }

  /**
   * Forget every cached object (their files are then fetched again when used). For a run that
   * ended with the machine: cached files are written without an fsync each, so their content
   * cannot be trusted after a power loss (service/bucket-run.ts decides, from the runs table).
   */
  forgetCached(): number {
    this.flush();
    this.db.query("DELETE FROM cache_parts").run();
    return this.db.query("DELETE FROM meta_cached").run().changes;
  }

  /** Replace the whole listing of `dir` and mark it listed at `now`. */
  replaceDir(dir: string, entries: IndexEntry[], now = Date.now()): void {
    this.flush();
    this.replaceTx(dir, entries, now);
  }

  /** Record one entry learned outside a listing (HEAD, probe). */
  putEntry(e: IndexEntry, now = Date.now()): void {
    this.pendingEntries.set(entryKey(e.dir, e.name), { e: { ...e }, now });
    this.schedule();
  }

  /** Forget one entry (S3 said it is gone). */
  deleteEntry(dir: string, name: string): void {
    this.pendingEntries.delete(entryKey(dir, name));
    this.q.delEntry.run(dir, name);
  }

  entry(dir: string, name: string): KnownEntry | undefined {
    const p = this.pendingEntries.get(entryKey(dir, name));
    if (p) return { ...p.e, mtimeMs: Math.round(p.e.mtimeMs), seenMs: p.now };
    const r = this.q.entry.get(dir, name);
    return r ? toEntry(r) : undefined;
  }

  list(dir: string): KnownEntry[] {
    this.flush();
    return this.q.list.all(dir).map(toEntry);
  }

  /** Up to `limit` entries of `dir` after `name`, in listing (byte) order. */
  after(dir: string, name: string, limit: number): KnownEntry[] {
    this.flush();
    return this.q.after.all(dir, name, limit).map(toEntry);
  }

  /** Write the batched rows now (one transaction). */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pending === 0) return;
    this.flushTx();
    this.flushes++;
    this.pendingEntries.clear();
    this.pendingCached.clear();
    this.pendingChecks.clear();
    this.pendingParts.clear();
  }

  /** Rows waiting to be written. */
  get pending(): number {
    return this.pendingEntries.size + this.pendingCached.size + this.pendingChecks.size + this.pendingParts.size;
  }

  private schedule(): void {
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = undefined;
      try {
        this.flush();
      } catch {
        /* disk full or index closed: the rows stay in memory for the next flush */
      }
    }, FLUSH_MS);
  }

  /** When `dir` was last listed completely, or undefined. */
  listedAt(dir: string): number | undefined {
    return this.q.dirListed.get(dir)?.listed_ms;
  }

  cached(key: string): CachedObject | undefined {
    const p = this.pendingCached.get(key);
    if (p) return { ...p.c, mtimeMs: Math.round(p.c.mtimeMs) };
    const r = this.q.cached.get(key);
    return r ? { key: r.key, etag: r.etag, size: r.size, mtimeMs: r.mtime_ms, mode: r.mode } : undefined;
  }

  putCached(c: CachedObject, now = Date.now()): void {
    this.pendingCached.set(c.key, { c: { ...c }, now });
    this.schedule();
  }

  /** Forget a cached copy (evicted, or its file is gone). Hook for the evictor. */
  dropCached(key: string): void {
    this.pendingCached.delete(key);
    this.db.query("DELETE FROM meta_cached WHERE key = ?1").run(key);
  }

  /** The kept parts of `key`, if any. */
  keptParts(key: string): KeptParts | undefined {
    const p = this.pendingParts.get(key);
    if (p) return { ...p, parts: { ...p.parts } };
    const r = this.q.parts.get(key);
    return r ? toKept(r) : undefined;
  }

  /** Record (batched) the kept parts of an object whose last reader closed it. */
  putKeptParts(k: KeptParts): void {
    this.pendingParts.set(k.key, { ...k, parts: { ...k.parts } });
    this.schedule();
  }

  /** Forget the kept parts of `key` (dropped, evicted, completed, or another ETag). */
  dropKeptParts(key: string): void {
    this.pendingParts.delete(key);
    this.q.delParts.run(key);
  }

  /** Every object with kept parts, least recently closed first. */
  allKeptParts(): KeptParts[] {
    this.flush();
    return this.db.query<PartsRow, []>("SELECT key, etag, size, mtime_ms, file, parts, bytes, closed_ms FROM cache_parts ORDER BY closed_ms, key").all().map(toKept);
  }

  /** One object fetched and checked by `kind` (a Verification kind; `none`: nothing could check it). */
  countCheck(kind: string): void {
    this.pendingChecks.set(kind, (this.pendingChecks.get(kind) ?? 0) + 1);
    this.schedule();
  }

  /** Every cached object's key and size (the evictor's start-up check against the files). */
  allCached(): { key: string; size: number }[] {
    this.flush();
    return this.db.query<{ key: string; size: number }, []>("SELECT key, size FROM meta_cached").all();
  }
}

/** Objects fetched per check kind, over every run (an index from before the table: none). */
export function readChecks(db: Database): Record<string, number> {
  const out: Record<string, number> = {};
  const has = db.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'cache_checks'").get()!.n > 0;
  if (!has) return out;
  for (const r of db.query<{ kind: string; n: number }, []>("SELECT kind, n FROM cache_checks").all()) out[r.kind] = r.n;
  return out;
}
