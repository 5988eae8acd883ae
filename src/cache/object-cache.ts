/**
 * The local copies of objects outside the workdir: `<cachepath>/.<bucket>/<key>`.
 *
 * Is: "give me a local file holding this object at this ETag", downloading when absent or
 * stale, one download per key however many callers wait (single flight), written to a temp
 * name in the same directory and renamed into place so a reader never sees a partial file,
 * even after a crash. The only user of the index's `meta_cached` rows, and the one place that
 * decides whether the kernel may keep its page cache of an object (`Acquired.keepCache`).
 * `prefetch` starts the same download before an open asks (bounded; fs/dir-read-ahead.ts).
 * Tells its `hooks` (the evictor, evictor.ts) what is in use, read, fetched and stored, and
 * retries a fetch once after a full disk made it evict. Counts every fetched object by what
 * checked its bytes (index table `cache_checks`, for `status --json`) and logs one warning per
 * object nothing could check. Keeps a streamed copy with composite checksums after its last
 * close (its checked parts; the only user of the index's `cache_parts` rows): a later open, or
 * the next run, serves those parts and fetches the holes; another ETag drops them; they count
 * in the cache bound (reservations) and are the first to go when the evictor needs room
 * (`dropIdlePartials`, least recently closed first). Remembers what S3 said of each streamed
 * object's bytes (`integrities`), so the next open of the same version (the next index query)
 * sends its GETs without a HEAD first. Is not: the workdir (never fetched
 * through here), metadata freshness (fs/namespace.ts) or the eviction policy.
 */
import { renameSync, rmSync, utimesSync, lstatSync } from "node:fs";
import { basename, dirname, relative } from "node:path";
import type { ObjectInfo, ObjectIntegrity, ObjectStore } from "../store/types.ts";
import { objectMode, objectMtimeMs } from "../store/meta.ts";
import { containedPath } from "./keys.ts";
import { mkdirsUnder, tempNameFor } from "./cache-root.ts";
import type { CachedObject, KeptParts, MetaIndex } from "./meta-index.ts";
import { PartialObject, DEFAULT_PARTIAL_OPTIONS, type PartialOptions } from "./partial-object.ts";
import { errMsg, fmtBytes, type Logger } from "../util/log.ts";
import { createLimiter, singleFlight } from "../util/async.ts";

/**
 * What the cache's bookkeeping (cache/evictor.ts) learns from the object cache. The default
 * does nothing: a cache without limits.
 */
export interface CacheHooks {
  /** `key` is in use (an open file, or a fetch): never evicted until the matching unpin. */
  pin(key: string): void;
  unpin(key: string): void;
  /** `key` was read now (an open or a close); kept in memory and written to the index in batches. */
  touch(key: string): void;
  /** Before fetching `size` bytes: make room (may evict now). Call the returned function when the fetch ends. */
  reserve(size: number): () => void;
  /** `key` is now cached with `size` bytes (its index row was just written). */
  stored(key: string, size: number): void;
  /** A cache write failed with ENOSPC: evict at least `size` bytes; false when nothing could go. */
  noSpace(size: number): Promise<boolean>;
}

export const NO_HOOKS: CacheHooks = {
  pin() {}, unpin() {}, touch() {}, reserve: () => () => {}, stored() {}, noSpace: async () => false,
};

/** A fetch that found the cache filesystem full even after evicting: readers get EIO. */
export class CacheFullError extends Error {
  /** toErrno (fs/errors.ts) maps a Node-style code to its errno. */
  readonly code = "EIO";
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = "CacheFullError";
  }
}

/** `code` (ENOSPC, ENOENT, ...) anywhere in the error's cause chain (the store wraps the write's own error). */
function hasErrno(err: unknown, code: string): boolean {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { code?: unknown }).code === code) return true;
  }
  return false;
}

/** ENOSPC anywhere in the error's cause chain (the store wraps the write's own error). */
export function isNoSpace(err: unknown): boolean {
  return hasErrno(err, "ENOSPC");
}

/** Objects at least this large are streamed (read while fetched) instead of downloaded whole first. */
export const STREAM_MIN_SIZE = 8 * 1024 * 1024;

/** Downloads of objects nobody has opened yet (`ObjectCache.prefetch`) running at once. */
export const PREFETCH_CONCURRENCY = 8;

/** Streamed objects whose integrity answer (what checks their bytes) is remembered between opens. */
export const INTEGRITY_MEMO = 1024;

/** What a reader gets from acquire(): a complete file, or one still being filled. */
export interface Acquired {
  path: string;
  partial: PartialObject | undefined;
  /** The object as cached (or being streamed). `mode` is null when the fetch did not learn it. */
  object: CachedObject;
  /** Fetched (or being fetched) for this open: `object` comes from this GET, not from an earlier one. */
  changed: boolean;
  /**
   * The kernel may keep its page cache of this file: the previous open of the key was served
   * the same ETag, so whatever pages the kernel holds are this content. Decided here only.
   */
  keepCache: boolean;
}

export interface EnsureResult {
  path: string;
  object: CachedObject;
  /** True when this call (or the one it joined) downloaded the object. */
  downloaded: boolean;
}

export class ObjectCache {
  private wholeFetches = singleFlight<string, EnsureResult>();
  private partials = new Map<string, PartialObject>();
  /** Tuning for streamed objects (tests and config may change it). */
  partialOptions: PartialOptions = DEFAULT_PARTIAL_OPTIONS;
  /** The ETag each key was last served to an opener at, to decide keep_cache. */
  private served = new Map<string, string>();
  private hooksNow: CacheHooks = NO_HOOKS;
  /**
   * Kept parts recorded by an earlier run and not opened yet in this one (index `cache_parts`),
   * least recently closed first, each with the reservation of its bytes in the cache bound.
   */
  private unloaded = new Map<string, { kept: KeptParts; release: () => void }>();
  /** The modification time each streamed copy was opened with (recorded with its kept parts). */
  private mtimes = new WeakMap<PartialObject, number>();
  /** The fetch-end callback of each streamed download's reservation. */
  private reservations = new Map<PartialObject, () => void>();
  /**
   * Streamed copies nobody has open, kept for their checked parts (PartialObject.retainable),
   * least recently closed first. Each holds a reservation of its checked bytes only.
   */
  private idle = new Set<PartialObject>();
  private lastFullLog = 0;
  /**
   * Cache directories (relative to the root) made or found real this run: a fetch into them
   * checks nothing again (mkdirsUnder's memo). Entries under a directory clearBlocker removes
   * are forgotten; the start-up sweep runs before any fetch.
   */
  private dirsMade = new Set<string>();
  /** Downloads started ahead of an open (`prefetch`): at most this many at once. */
  private ahead = createLimiter(PREFETCH_CONCURRENCY);
  /**
   * What S3 said of each streamed object's bytes when a copy of it was last opened (HEAD with
   * checksum mode, and partNumber=1), so a later open of the same version (the next index
   * query on a BAM) starts its GETs at once instead of one round trip later. At most
   * INTEGRITY_MEMO keys, the least recently learned go first; a copy that failed its check
   * forgets its key's.
   */
  private integrities = new Map<string, ObjectIntegrity>();

  constructor(
    readonly root: string,
    private store: ObjectStore,
    private index: MetaIndex,
    private log: Logger,
  ) {}

  /** Pins, last-read times, room for fetches (set by the daemon when the cache has limits). */
  get hooks(): CacheHooks {
    return this.hooksNow;
  }

  /**
   * Setting them counts the parts kept by an earlier run in the cache bound (their files were
   * left alone by the start-up sweeps); a row whose file is gone or of another size is dropped.
   */
  set hooks(h: CacheHooks) {
    this.hooksNow = h;
    for (const u of this.unloaded.values()) u.release();
    this.unloaded.clear();
    for (const kept of this.index.allKeptParts()) {
      if (!this.keptFileOk(kept)) {
        this.forgetKept(kept);
        continue;
      }
      const release = h.reserve(kept.bytes);
      this.unloaded.set(kept.key, { kept, release });
    }
  }

  /** The kept file is a regular file of the object's size, inside this cache. */
  private keptFileOk(kept: KeptParts): boolean {
    try {
      const path = containedPath(this.root, kept.file);
      const st = lstatSync(path);
      return st.isFile() && st.size === kept.size;
    } catch {
      return false;
    }
  }

  /** Drop kept parts recorded in the index: the row, then the file. */
  private forgetKept(kept: KeptParts): void {
    try {
      this.index.dropKeptParts(kept.key);
    } catch (err) {
      this.log.debug(`cannot drop the kept parts of ${kept.key} from the index: ${errMsg(err)}`);
    }
    try {
      rmSync(containedPath(this.root, kept.file), { force: true });
    } catch {
      /* not ours to remove (outside the cache): the row is gone anyway */
    }
  }

  pathOf(key: string): string {
    return containedPath(this.root, key);
  }

  /** A cached copy at `etag`, if one is on disk with the recorded size. */
  peek(key: string, etag: string): EnsureResult | undefined {
    const c = this.index.cached(key);
    if (!c || c.etag !== etag) return undefined;
    const path = this.pathOf(key);
    try {
      const st = lstatSync(path); // a symlink planted in the cache is never served
      if (!st.isFile() || st.size !== c.size) return undefined;
    } catch {
      return undefined;
    }
    return { path, object: c, downloaded: false };
  }

  /** The whole object downloaded once however many callers wait for it (single flight). */
  private fetchWhole(key: string, size: number): Promise<EnsureResult> {
    return this.wholeFetches.run(key, () => this.download(key, size));
  }

  /**
   * The final path of `key` and a fresh temp name beside it. Whatever stands in the way is
   * stale cache and is cleared now, before any fetch: a file where a parent directory must
   * be, or a directory where the object's file goes.
   */
  private prepareTemp(key: string, clearNow = true): { path: string; tmp: string } {
    const path = this.pathOf(key);
    this.makeParent(path);
    if (clearNow) this.clearBlocker(path);
    return { path, tmp: `${dirname(path)}/${tempNameFor(basename(path))}` };
  }

  /**
   * The whole object into `tmp`. A parent directory removed meanwhile (ENOENT: someone cleaned
   * the cache under a running daemon) is made again, and the download tried once more.
   */
  private async downloadTo(key: string, path: string, tmp: string): Promise<ObjectInfo> {
    try {
      return await this.store.download(key, tmp, { durable: false });
    } catch (err) {
      if (!hasErrno(err, "ENOENT")) throw err;
      this.dirsMade.clear();
      this.makeParent(path);
      return await this.store.download(key, tmp, { durable: false });
    }
  }

  /**
   * The downloaded temp file to its final name. A directory standing there (the key was a
   * prefix before) is stale cache: removed, and the rename done again. Checked only when the
   * rename fails, not with an lstat before every fetch.
   */
  private place(tmp: string, path: string): void {
    try {
      renameSync(tmp, path);
    } catch (err) {
      if (!this.clearBlocker(path)) throw err;
      renameSync(tmp, path);
    }
  }

  private async download(key: string, size: number): Promise<EnsureResult> {
    const { path, tmp } = this.prepareTemp(key, false);
    const t0 = performance.now();
    const done = this.hooks.reserve(size);
    try {
      // No fsync per object: the next start forgets cached objects of a run that ended
      // with the machine, so a copy lost in a power cut is fetched again instead of trusted.
      const info = await this.roomy(key, size, () => this.downloadTo(key, path, tmp));
      this.place(tmp, path);
      const mtimeMs = objectMtimeMs(info);
      utimesSync(path, mtimeMs / 1000, mtimeMs / 1000);
      const object: CachedObject = { key, etag: info.etag, size: info.size, mtimeMs, mode: objectMode(info) };
      this.index.putCached(object);
      this.counted(key, info.unverified ? "none" : checkKind(info.checkedWith));
      this.hooks.stored(key, info.size);
      // Formatted only when wanted: the line was 2 % of a small object's CPU.
      if (this.log.enabled("debug")) this.log.debug(`fetched ${key} (${fmtBytes(info.size)} in ${((performance.now() - t0) / 1000).toFixed(2)} s)`);
      return { path, object, downloaded: true };
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    } finally {
      done();
    }
  }

  /**
   * `op`; when it hits ENOSPC the hooks evict, and it is retried once. A second ENOSPC is a
   * CacheFullError (EIO for the reader) and an error line, at most one per 10 s.
   */
  private async roomy<T>(key: string, size: number, op: () => Promise<T>): Promise<T> {
    let err: unknown;
    try {
      return await op();
    } catch (e) {
      if (!isNoSpace(e)) throw e;
      err = e;
    }
    // Retried even when this call freed nothing: a concurrent fetch may just have made room.
    try {
      await this.hooks.noSpace(size);
    } catch (e) {
      this.log.warn(`cannot evict to make room for ${key}: ${errMsg(e)}`);
    }
    try {
      return await op();
    } catch (e) {
      if (!isNoSpace(e)) throw e;
      err = e;
    }
    const msg = `cache full: no space left in ${this.root} to fetch ${key} (${fmtBytes(size)}), even after evicting every cached object not in use`;
    if (Date.now() - this.lastFullLog > 10_000) {
      this.lastFullLog = Date.now();
      this.log.error(msg);
    }
    throw new CacheFullError(msg, { cause: err });
  }

  /** The store as a PartialObject sees it: ranged and part GETs whose cache writes get one retry after ENOSPC. */
  private roomyStore(): ObjectStore {
    const store = this.store;
    const streamRange: ObjectStore["streamRange"] = (key, start, end, sink, signal, ifMatch) =>
      this.roomy(key, end - start, () => store.streamRange(key, start, end, sink, signal, ifMatch));
    const getPart: ObjectStore["getPart"] = (key, n, sink, opts) => this.roomy(key, 0, () => store.getPart(key, n, sink, opts));
    // A Proxy, not a copy: every other method stays the store's own, called on the store.
    return new Proxy(store, {
      get(target, prop) {
        if (prop === "streamRange") return streamRange;
        if (prop === "getPart") return getPart;
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  }

  /**
   * Open an object for reading: a cached file when present at `etag`; small objects are
   * downloaded whole first; large ones are streamed through a PartialObject shared by every
   * reader of the same version. Pair each call with `release`.
   */
  async acquire(key: string, etag: string, size: number, mtimeMs: number): Promise<Acquired> {
    // Pinned from here until release(): neither the file nor its fetch is evicted meanwhile.
    this.hooks.pin(key);
    this.hooks.touch(key);
    try {
      return await this.acquirePinned(key, etag, size, mtimeMs);
    } catch (err) {
      this.hooks.unpin(key);
      throw err;
    }
  }

  /**
   * Download a small object before anyone opens it (fs/ decides when: a reader going through a
   * directory in order). The download is the one an acquire() of the key joins (single flight),
   * pinned while it runs, and at most PREFETCH_CONCURRENCY run at once. Nothing happens for a
   * streamed-size object, one cached at `etag`, or one already on its way. Failures are only
   * logged: the open that needs the object fetches it itself.
   */
  prefetch(key: string, etag: string, size: number): boolean {
    if (size >= STREAM_MIN_SIZE || this.wholeFetches.running(key) !== undefined || this.peek(key, etag)) return false;
    this.hooks.pin(key);
    this.wholeFetches
      .run(key, () => this.ahead.run(() => this.download(key, size)))
      .catch((err: unknown) => this.log.debug(`prefetch of ${key} failed (an open fetches it): ${errMsg(err)}`))
      .finally(() => this.hooks.unpin(key));
    return true;
  }

  /** The end of an acquire(): the reader closed its file (FUSE RELEASE). */
  release(key: string, partial: PartialObject | undefined): void {
    if (partial) this.releasePartial(partial);
    this.hooks.touch(key);
    this.hooks.unpin(key);
  }

  private async acquirePinned(key: string, etag: string, size: number, mtimeMs: number): Promise<Acquired> {
    const hit = this.peek(key, etag);
    if (hit) return this.serve(hit.path, undefined, hit.object, false);
    if (size < STREAM_MIN_SIZE) {
      const got = await this.fetchWhole(key, size);
      return this.serve(got.path, undefined, got.object, got.downloaded);
    }
    let p = this.partials.get(key);
    if (p && (p.etag !== etag || p.corrupt)) {
      // Another version in S3 (or a bad copy): the kept parts and their file go.
      if (p.corrupt) this.forgetBadCopy(key);
      if (p.refs === 0) this.drop(p);
      this.partials.delete(key);
      p = undefined;
    }
    if (p && this.idle.has(p)) {
      // A kept copy opened again: it serves its checked parts and fetches only the holes, with
      // room reserved for the whole object again. Out of `idle` and referenced first, so the
      // eviction this reservation may run cannot drop it.
      this.idle.delete(p);
      p.refs++;
      let done: () => void;
      try {
        done = this.hooks.reserve(size);
      } finally {
        p.refs--;
      }
      this.reservations.get(p)?.();
      this.reservations.set(p, done);
    }
    const object: CachedObject = { key, etag, size, mtimeMs, mode: null };
    let created = false;
    if (!p) {
      const { path, tmp: fresh } = this.prepareTemp(key);
      // Parts an earlier run kept: served again when S3 still holds this version, else dropped.
      let tmp = fresh;
      let resume: Record<number, string> | undefined;
      const kept = this.unloaded.get(key)?.kept ?? this.index.keptParts(key);
      if (kept) {
        this.unloaded.get(key)?.release();
        this.unloaded.delete(key);
        if (kept.etag === etag && kept.size === size && this.keptFileOk(kept)) {
          tmp = containedPath(this.root, kept.file);
          resume = kept.parts;
        } else this.forgetKept(kept);
      }
      const done = this.hooks.reserve(size);
      try {
        p = new PartialObject(key, etag, size, tmp, path, this.roomyStore(), (finished) => {
          utimesSync(path, mtimeMs / 1000, mtimeMs / 1000);
          this.index.dropKeptParts(key);
          this.index.putCached(object);
          this.counted(key, finished.verification?.kind ?? "none");
          this.hooks.stored(key, size);
          this.unreserve(finished);
          if (this.partials.get(key) === finished) this.partials.delete(key);
          this.log.debug(`fetched ${key} (${fmtBytes(size)}, streamed)`);
        }, this.log, this.partialOptions, resume, {
          integrity: this.integrities.get(key),
          learned: (i) => this.rememberIntegrity(key, i),
        });
      } catch (err) {
        done();
        throw err;
      }
      this.mtimes.set(p, mtimeMs);
      this.reservations.set(p, done);
      this.partials.set(key, p);
      created = true;
    }
    p.refs++;
    return this.serve(p.path, p, object, created);
  }

  private serve(path: string, partial: PartialObject | undefined, object: CachedObject, changed: boolean): Acquired {
    const keepCache = this.served.get(object.key) === object.etag;
    this.served.set(object.key, object.etag);
    return { path, partial, object, changed, keepCache };
  }

  private rememberIntegrity(key: string, i: ObjectIntegrity): void {
    this.integrities.delete(key);
    // Every part's size, when they differ, can run to 10,000 numbers: not worth holding on to.
    if ((i.parts?.sizes?.length ?? 0) > 1024) return;
    this.integrities.set(key, i);
    if (this.integrities.size > INTEGRITY_MEMO) this.integrities.delete(this.integrities.keys().next().value!);
  }

  /**
   * A copy of `key` failed its check: it may have left bad pages in the kernel (no keep_cache
   * next time), and what S3 said of it is asked again.
   */
  private forgetBadCopy(key: string): void {
    this.served.delete(key);
    this.integrities.delete(key);
  }

  private releasePartial(p: PartialObject): void {
    if (p.corrupt) this.forgetBadCopy(p.key);
    if (p.refs > 1 || (p.complete && !p.corrupt)) {
      p.refs--;
      return;
    }
    if (p.retainable && this.partials.get(p.key) === p) {
      // Kept for a later open: its reservation shrinks to the checked bytes it holds (taken
      // while still referenced, so the eviction this may run cannot drop it).
      const done = this.hooks.reserve(p.checkedBytes);
      this.reservations.get(p)?.();
      this.reservations.set(p, done);
      p.refs--;
      this.idle.add(p);
      this.recordKept(p);
      return;
    }
    p.refs--;
    this.drop(p);
    if (this.partials.get(p.key) === p) this.partials.delete(p.key);
  }

  /** Record an idle copy's checked parts in the index (batched), for later opens and the next run. */
  private recordKept(p: PartialObject): void {
    try {
      this.index.putKeptParts({
        key: p.key, etag: p.etag, size: p.size, mtimeMs: this.mtimes.get(p) ?? 0, file: relative(this.root, p.tmpPath),
        parts: p.keptParts(), bytes: p.checkedBytes, closedMs: Date.now(),
      });
    } catch (err) {
      this.log.debug(`cannot record the kept parts of ${p.key}: ${errMsg(err)}`);
    }
  }

  /** Discard an incomplete streamed download and give back the room it had reserved. */
  private drop(p: PartialObject): void {
    this.idle.delete(p);
    // Its parts may be recorded (kept earlier, or resumed from the last run): the file goes now.
    try {
      this.index.dropKeptParts(p.key);
    } catch (err) {
      this.log.debug(`cannot drop the kept parts of ${p.key} from the index: ${errMsg(err)}`);
    }
    p.discard();
    this.unreserve(p);
  }

  private unreserve(p: PartialObject): void {
    this.reservations.get(p)?.();
    this.reservations.delete(p);
  }

  /**
   * Discard streamed copies nobody has open, least recently closed first, until `bytes` are
   * freed (all of them by default); returns the bytes they had reserved. The evictor calls it
   * before evicting whole objects.
   */
  dropIdlePartials(bytes = Infinity): number {
    let freed = 0;
    // Parts kept by an earlier run first: they were closed before anything of this run.
    for (const [key, u] of this.unloaded) {
      if (freed >= bytes) return freed;
      this.unloaded.delete(key);
      u.release();
      this.forgetKept(u.kept);
      freed += u.kept.bytes;
    }
    const order = [...this.idle, ...[...this.partials.values()].filter((p) => !this.idle.has(p))];
    for (const p of order) {
      if (freed >= bytes) break;
      if (p.refs > 0 || p.complete) continue;
      freed += this.idle.has(p) ? p.checkedBytes : p.size;
      this.drop(p);
      if (this.partials.get(p.key) === p) this.partials.delete(p.key);
    }
    return freed;
  }

  /** Streamed copies kept after their last close (count, and the checked bytes they hold). */
  keptPartials(): { objects: number; bytes: number } {
    let bytes = 0;
    for (const p of this.idle) bytes += p.checkedBytes;
    for (const u of this.unloaded.values()) bytes += u.kept.bytes;
    return { objects: this.idle.size + this.unloaded.size, bytes };
  }

  /** One object fetched, checked by `kind`; `none` (unverified) gets one log line per object. */
  private counted(key: string, kind: string): void {
    if (kind === "none") this.log.warn(`${key}: fetched without a check of its bytes (S3 holds nothing usable for it); only its length was checked`);
    try {
      this.index.countCheck(kind);
    } catch (err) {
      this.log.debug(`cannot count the check of ${key}: ${errMsg(err)}`);
    }
  }

  /** mkdir -p for the parent, never through a symlink; a stale cached *file* (or symlink) in the way is removed. */
  private makeParent(path: string): void {
    mkdirsUnder(this.root, relative(this.root, dirname(path)), { replace: true, known: this.dirsMade });
  }

  /**
   * A stale cached *directory* where the object's file goes (the key changed kind) is removed
   * (and forgotten as made); true when one was.
   */
  private clearBlocker(path: string): boolean {
    try {
      if (!lstatSync(path).isDirectory()) return false;
    } catch {
      return false; // absent: fine
    }
    rmSync(path, { recursive: true, force: true });
    const rel = relative(this.root, path);
    for (const d of this.dirsMade) if (d === rel || d.startsWith(`${rel}/`)) this.dirsMade.delete(d);
    return true;
  }
}

/** The Verification kind a download's `checkedWith` words name. */
function checkKind(what: string | undefined): string {
  if (what === undefined) return "none";
  if (what.startsWith("composite")) return "composite";
  if (what.startsWith("multipart")) return "multipart-etag";
  if (what.startsWith("MD5")) return "md5";
  return "full";
}
