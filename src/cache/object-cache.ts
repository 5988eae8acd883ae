/**
 * The local copies of objects outside the workdir: `<cachepath>/.<bucket>/<key>`.
 *
 * Is: "give me a local file holding this object at this ETag", downloading when absent or
 * stale, one download per key however many callers wait (single flight), written to a temp
 * name in the same directory and renamed into place so a reader never sees a partial file,
 * even after a crash. The only user of the index's `meta_cached` rows, and the one place that
 * decides whether the kernel may keep its page cache of an object (`Acquired.keepCache`).
 * Is not: the workdir (never fetched through here), metadata freshness (fs/namespace.ts) or
 * eviction.
 */
import { renameSync, rmSync, utimesSync, lstatSync } from "node:fs";
import { basename, dirname, relative } from "node:path";
import type { ObjectStore } from "../store/types.ts";
import { objectMode, objectMtimeMs } from "../store/meta.ts";
import { containedPath } from "./keys.ts";
import { mkdirsUnder, tempNameFor } from "./cache-root.ts";
import type { CachedObject, MetaIndex } from "./meta-index.ts";
import { PartialObject, DEFAULT_PARTIAL_OPTIONS, type PartialOptions } from "./partial-object.ts";
import { fmtBytes, type Logger } from "../util/log.ts";
import { singleFlight } from "../util/async.ts";

/** Objects at least this large are streamed (read while fetched) instead of downloaded whole first. */
export const STREAM_MIN_SIZE = 8 * 1024 * 1024;

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

  constructor(
    readonly root: string,
    private store: ObjectStore,
    private index: MetaIndex,
    private log: Logger,
  ) {}

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
  private fetchWhole(key: string): Promise<EnsureResult> {
    return this.wholeFetches.run(key, () => this.download(key));
  }

  /**
   * The final path of `key` and a fresh temp name beside it. Whatever stands in the way is
   * stale cache and is cleared now, before any fetch: a file where a parent directory must
   * be, or a directory where the object's file goes.
   */
  private prepareTemp(key: string): { path: string; tmp: string } {
    const path = this.pathOf(key);
    this.makeParent(path);
    this.clearBlocker(path);
    return { path, tmp: `${dirname(path)}/${tempNameFor(basename(path))}` };
  }

  private async download(key: string): Promise<EnsureResult> {
    const { path, tmp } = this.prepareTemp(key);
    const t0 = performance.now();
    try {
      // No fsync per object: the next start forgets cached objects of a run that ended
      // with the machine, so a copy lost in a power cut is fetched again instead of trusted.
      const info = await this.store.download(key, tmp, { durable: false });
      renameSync(tmp, path);
      const mtimeMs = objectMtimeMs(info);
      utimesSync(path, mtimeMs / 1000, mtimeMs / 1000);
      const object: CachedObject = { key, etag: info.etag, size: info.size, mtimeMs, mode: objectMode(info) };
      this.index.putCached(object);
      const secs = (performance.now() - t0) / 1000;
      this.log.debug(`fetched ${key} (${fmtBytes(info.size)} in ${secs.toFixed(2)} s)`);
      return { path, object, downloaded: true };
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
  }

  /**
   * Open an object for reading: a cached file when present at `etag`; small objects are
   * downloaded whole first; large ones are streamed through a PartialObject shared by every
   * reader of the same version. Pair each call with `releasePartial` when it returned one.
   */
  async acquire(key: string, etag: string, size: number, mtimeMs: number): Promise<Acquired> {
    const hit = this.peek(key, etag);
    if (hit) return this.serve(hit.path, undefined, hit.object, false);
    if (size < STREAM_MIN_SIZE) {
      const got = await this.fetchWhole(key);
      return this.serve(got.path, undefined, got.object, got.downloaded);
    }
    let p = this.partials.get(key);
    if (p && (p.etag !== etag || p.corrupt)) {
      if (p.corrupt) this.served.delete(key);
      if (p.refs === 0) p.discard();
      this.partials.delete(key);
      p = undefined;
    }
    const object: CachedObject = { key, etag, size, mtimeMs, mode: null };
    let created = false;
    if (!p) {
      const { path, tmp } = this.prepareTemp(key);
      p = new PartialObject(key, etag, size, tmp, path, this.store, (done) => {
        utimesSync(path, mtimeMs / 1000, mtimeMs / 1000);
        this.index.putCached(object);
        if (this.partials.get(key) === done) this.partials.delete(key);
        this.log.debug(`fetched ${key} (${fmtBytes(size)}, streamed)`);
      }, this.log, this.partialOptions);
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

  releasePartial(p: PartialObject): void {
    p.refs--;
    // A copy that failed its check may have left bad pages in the kernel: no keep_cache next time.
    if (p.corrupt) this.served.delete(p.key);
    if (p.refs > 0 || (p.complete && !p.corrupt)) return;
    p.discard();
    if (this.partials.get(p.key) === p) this.partials.delete(p.key);
  }

  /** mkdir -p for the parent, never through a symlink; a stale cached *file* (or symlink) in the way is removed. */
  private makeParent(path: string): void {
    mkdirsUnder(this.root, relative(this.root, dirname(path)), { replace: true });
  }

  /** A stale cached *directory* where the object's file goes (the key changed kind) is removed. */
  private clearBlocker(path: string): void {
    try {
      if (lstatSync(path).isDirectory()) rmSync(path, { recursive: true, force: true });
    } catch {
      /* absent: fine */
    }
  }
}
