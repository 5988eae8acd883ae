/**
 * The namespace of one bucket: which paths exist, what they are, and how long that answer holds.
 *
 * Is: the one owner of the inode table, of the listing and entry rows of the index
 * (`meta_entries`, `meta_dirs`) and of their freshness. Every entry, positive or negative,
 * is trusted for `metadataTtl` seconds from when S3 last confirmed it (a LIST, a HEAD, a GET)
 * during this run; rows left by an earlier run are revalidated before they are trusted, and
 * are served only when S3 does not answer (after STALE_GRACE_MS, or on a retryable error).
 * A name is looked up with at most one HEAD (plus a one-key LIST probe for directories when
 * nothing is known of it), and that answer also serves the open that follows. It is also the
 * one place that decides where a path lies relative to the workdir (`classify`).
 * Is not: file handles or the object cache (bucket-fs.ts, cache/), S3 details (store/), FUSE.
 */
import { StoreError, type ObjectInfo, type ObjectStore } from "../store/types.ts";
import { objectMode, objectMtimeMs } from "../store/meta.ts";
import type { CachedObject, IndexEntry, KnownEntry, MetaIndex } from "../cache/meta-index.ts";
import { describeProblem, nameProblem } from "../cache/keys.ts";
import { singleFlight } from "../util/async.ts";
import { E, FsError } from "./errors.ts";
import { InodeTable, ROOT_INO, type Inode } from "./inodes.ts";
import type { Attr } from "./types.ts";
import type { Logger } from "../util/log.ts";

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
/** Default permissions for objects without a stored mode. Write bits are always cleared. */
const DEFAULT_FILE_PERM = 0o644;
const DIR_PERM = 0o555;
const WORKDIR_PERM = 0o755;
/** How long the kernel may cache "no such file" answers. */
const NEGATIVE_TTL_S = 5;
/**
 * When the index holds an older answer, how long a metadata request may wait for S3 before
 * that answer is served instead (the request goes on and refreshes the index when it lands).
 */
export const STALE_GRACE_MS = 3000;
/** Negative answers kept in memory before expired ones are swept. */
const NEGATIVE_SWEEP_AT = 10_000;

/**
 * Where a path lies relative to the workdir:
 * - `remote`: an object or prefix of the bucket, answered from S3;
 * - `workdir-root`: the workdir itself (a directory; the bind mount covers it);
 * - `inside-workdir`: below the workdir: never visible through FUSE (the bind mount shows the real files);
 * - `workdir-ancestor`: the bucket root or a directory above the workdir (always a directory).
 */
export type PathClass = "remote" | "workdir-root" | "inside-workdir" | "workdir-ancestor";

export interface NamespaceOptions {
  bucket: string;
  store: ObjectStore;
  index: MetaIndex;
  /** Workdir relative to the bucket root ("workdir", "runs/a"), or undefined. */
  workdir: string | undefined;
  metadataTtlS: number;
  uid: number;
  gid: number;
  log: Logger;
  /** Clock (ms since epoch); tests pass their own. */
  now?: () => number;
}

export const parentOf = (p: string): string => (p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "");
export const baseOf = (p: string): string => p.slice(p.lastIndexOf("/") + 1);
export const join = (dir: string, name: string): string => (dir === "" ? name : `${dir}/${name}`);
const prefixOf = (dir: string): string => (dir === "" ? "" : `${dir}/`);
const byName = (a: IndexEntry, b: IndexEntry): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export class Namespace {
  readonly inodes = new InodeTable();
  private readonly now: () => number;
  /** Start of this run: rows confirmed before it come from an earlier run and are revalidated. */
  private readonly runStartMs: number;
  private readonly ttlMs: number;
  /** Paths S3 said do not exist, with when. */
  private negative = new Map<string, number>();
  private relists = singleFlight<string, KnownEntry[]>();
  private probes = singleFlight<string, KnownEntry | undefined>();
  private heads = singleFlight<string, KnownEntry | null>();
  private warned = new Set<string>();

  constructor(private o: NamespaceOptions) {
    this.now = o.now ?? Date.now;
    this.runStartMs = this.now();
    this.ttlMs = o.metadataTtlS * 1000;
  }

  // ---- where a path lies -------------------------------------------------------------

  classify(path: string): PathClass {
    const w = this.o.workdir;
    if (w === undefined) return "remote";
    if (path === w) return "workdir-root";
    if (path.startsWith(w + "/")) return "inside-workdir";
    if (path === "" || w.startsWith(path + "/")) return "workdir-ancestor";
    return "remote";
  }

  /** Kernel cache time for entries in directory `dir`: short in the workdir's own view. */
  timeoutIn(dir: string): number {
    const c = this.classify(dir);
    return c === "workdir-root" || c === "inside-workdir" ? 1 : this.o.metadataTtlS;
  }

  negativeTimeout(): number {
    return Math.min(NEGATIVE_TTL_S, this.o.metadataTtlS);
  }

  // ---- inodes ------------------------------------------------------------------------

  node(ino: number): Inode {
    const n = this.inodes.get(ino);
    if (!n) throw new FsError(E.ESTALE, `unknown inode ${ino}`);
    return n;
  }

  // ---- attributes ----------------------------------------------------------------------

  dirAttr(ino: number, path: string): Attr {
    const c = this.classify(path);
    const perm = c === "workdir-root" || c === "inside-workdir" ? WORKDIR_PERM : DIR_PERM;
    return { ino, mode: S_IFDIR | perm, nlink: 2, uid: this.o.uid, gid: this.o.gid, size: 4096, mtimeMs: this.runStartMs };
  }

  attrOf(ino: number, e: IndexEntry): Attr {
    if (e.isDir) return this.dirAttr(ino, join(e.dir, e.name));
    const perm = (e.mode ?? DEFAULT_FILE_PERM) & ~0o222 & 0o7777;
    return { ino, mode: S_IFREG | perm, nlink: 1, uid: this.o.uid, gid: this.o.gid, size: e.size, mtimeMs: e.mtimeMs };
  }

  // ---- freshness -----------------------------------------------------------------------

  /** Confirmed by S3 during this run, less than metadataTtl ago. */
  private fresh(at: number | undefined): boolean {
    if (at === undefined || at < this.runStartMs) return false;
    const age = this.now() - at;
    return age >= 0 && age < this.ttlMs;
  }

  private synthDir(path: string): KnownEntry {
    return {
      dir: parentOf(path), name: baseOf(path), isDir: true, size: 0, mtimeMs: this.runStartMs, etag: "", mode: null, seenMs: this.now(),
    };
  }

  private fileEntry(dir: string, name: string, o: ObjectInfo): KnownEntry {
    return {
      dir, name, isDir: false, size: o.size, mtimeMs: objectMtimeMs(o), etag: o.etag,
      mode: o.meta ? objectMode(o) : null, seenMs: this.now(),
    };
  }

  private remember(e: KnownEntry): KnownEntry {
    this.o.index.putEntry(e, e.seenMs);
    this.negative.delete(join(e.dir, e.name));
    return e;
  }

  private forgetPath(path: string): void {
    this.o.index.deleteEntry(parentOf(path), baseOf(path));
    if (this.negative.size >= NEGATIVE_SWEEP_AT) {
      for (const [p, at] of this.negative) if (!this.fresh(at)) this.negative.delete(p);
    }
    this.negative.set(path, this.now());
  }

  private warnOnce(key: string, msg: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.o.log.warn(msg);
  }

  /**
   * `p`, unless S3 is unreachable or slow and an older answer exists (`haveOld`): then the
   * older answer from `old()` after STALE_GRACE_MS or on a retryable error, with one warning.
   */
  async orStale<T, U>(p: Promise<T>, haveOld: boolean, old: () => U, what: string): Promise<T | U> {
    if (!haveOld) return p;
    p.catch(() => {}); // settles later in the background when we stop waiting
    let timer: Timer | undefined;
    const grace = new Promise<"grace">((r) => (timer = setTimeout(() => r("grace"), STALE_GRACE_MS)));
    try {
      const r = await Promise.race([p, grace]);
      if (r !== "grace") return r;
      this.warnOnce(`slow:${what}`, `${what}: S3 has not answered in ${STALE_GRACE_MS} ms; serving what the index knows`);
      return old();
    } catch (err) {
      if (!(err instanceof StoreError && err.retryable)) throw err;
      this.warnOnce(`down:${what}`, `${what} failed (${err.message}); serving what the index knows`);
      return old();
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- listings ----------------------------------------------------------------------

  /** When `dir`'s listing was last confirmed (its version for the kernel's readdir cache), or undefined. */
  listingVersion(dir: string): number | undefined {
    const c = this.classify(dir);
    if (c === "workdir-root" || c === "inside-workdir") return 0; // always empty
    return this.o.index.listedAt(dir);
  }

  /** The entries of `dir` (fresh from the index, or listed now), workdir ancestors included. */
  async listing(dir: string): Promise<IndexEntry[]> {
    const c = this.classify(dir);
    if (c === "workdir-root" || c === "inside-workdir") return [];
    const listedAt = this.o.index.listedAt(dir);
    const entries = this.fresh(listedAt)
      ? this.o.index.list(dir)
      : await this.orStale(this.relists.run(dir, () => this.listNow(dir)), listedAt !== undefined, () => this.o.index.list(dir), `listing /${dir}`);
    return c === "workdir-ancestor" ? this.withWorkdir(dir, entries) : entries;
  }

  /** `entries` of a workdir ancestor, with the next directory towards the workdir always present. */
  private withWorkdir(dir: string, entries: IndexEntry[]): IndexEntry[] {
    const next = (this.o.workdir ?? "").slice(prefixOf(dir).length).split("/")[0] ?? "";
    const rest = entries.filter((e) => e.name !== next);
    rest.push(this.synthDir(join(dir, next)));
    return rest.sort(byName);
  }

  private async listNow(dir: string): Promise<KnownEntry[]> {
    const prefix = prefixOf(dir);
    const t0 = performance.now();
    const l = await this.o.store.listDir(prefix);
    const t1 = performance.now();
    const now = this.now();
    const found = new Map<string, KnownEntry>();
    for (const p of l.prefixes) {
      const name = p.slice(prefix.length, -1);
      const bad = nameProblem(name);
      if (bad) {
        this.warnOnce(p, `skipping prefix ${JSON.stringify(p)} in ${this.o.bucket}: ${describeProblem(bad)}`);
        continue;
      }
      found.set(name, { dir, name, isDir: true, size: 0, mtimeMs: this.runStartMs, etag: "", mode: null, seenMs: now });
    }
    for (const o of l.objects) {
      const name = o.key.slice(prefix.length);
      const bad = nameProblem(name);
      if (bad) {
        this.warnOnce(o.key, `skipping key ${JSON.stringify(o.key)} in ${this.o.bucket}: ${describeProblem(bad)}`);
        continue;
      }
      if (found.has(name)) {
        this.warnOnce(o.key, `key ${JSON.stringify(o.key)} in ${this.o.bucket} is also a prefix; shown as a directory`);
        continue;
      }
      const old = this.o.index.entry(dir, name);
      const e = this.fileEntry(dir, name, o);
      // The mode learned from a HEAD or GET stays while the object is unchanged.
      if (old && !old.isDir && old.etag === o.etag) e.mode = old.mode;
      found.set(name, e);
    }
    const entries = [...found.values()].sort(byName);
    this.o.index.replaceDir(dir, entries, now);
    const t2 = performance.now();
    this.o.log.debug(`listed /${dir}: ${entries.length} entries (LIST ${(t1 - t0).toFixed(0)} ms, index ${(t2 - t1).toFixed(0)} ms)`);
    return entries;
  }

  /** Up to `limit` entries of `dir` after `name` as the index has them (no request); none in the workdir's views. */
  entriesAfter(dir: string, name: string, limit: number): IndexEntry[] {
    const c = this.classify(dir);
    if (c === "workdir-root" || c === "inside-workdir") return [];
    return this.o.index.after(dir, name, limit);
  }

  // ---- lookups -----------------------------------------------------------------------

  /**
   * One name of `dir`: from a fresh listing or a fresh entry (positive or negative), else
   * asked of S3 (see `probe`). Undefined when absent.
   */
  async find(dir: string, name: string): Promise<IndexEntry | undefined> {
    const path = join(dir, name);
    const c = this.classify(path);
    if (c === "workdir-root" || c === "workdir-ancestor") return this.synthDir(path);
    // Inside the workdir FUSE shows nothing: the bind mount of the local workdir covers it.
    if (c === "inside-workdir") return undefined;
    const listedAt = this.o.index.listedAt(dir);
    if (this.fresh(listedAt)) return this.o.index.entry(dir, name);
    const known = this.o.index.entry(dir, name);
    if (known && this.fresh(known.seenMs)) return known;
    if (!known && this.fresh(this.negative.get(path))) return undefined;
    const haveOld = known !== undefined || listedAt !== undefined;
    return this.orStale(this.probes.run(path, () => this.probe(path, known)), haveOld, () => known, `looking up /${path}`);
  }

  /**
   * Ask S3 what `path` is, with at most one HEAD: a known file is HEADed (a directory probe
   * only if it is gone), a known directory is probed (a HEAD only if the prefix is gone), and
   * an unknown name gets both at once.
   */
  private async probe(path: string, known: IndexEntry | undefined): Promise<KnownEntry | undefined> {
    const { store } = this.o;
    let isDir: boolean;
    let head: ObjectInfo | null;
    if (known && !known.isDir) {
      head = await store.head(path);
      isDir = head ? false : await store.hasPrefix(path + "/");
    } else if (known?.isDir) {
      isDir = await store.hasPrefix(path + "/");
      head = isDir ? null : await store.head(path);
    } else {
      [isDir, head] = await Promise.all([store.hasPrefix(path + "/"), store.head(path)]);
    }
    if (isDir) return this.remember(this.synthDir(path));
    if (head) return this.remember(this.fileEntry(parentOf(path), baseOf(path), head));
    this.forgetPath(path);
    return undefined;
  }

  /**
   * The entries of directory inode `n`, for opendir. A name known as a directory (from any
   * run) is not probed first: the listing that follows asks S3 anyway. Throws ENOENT, ENOTDIR.
   */
  async openDir(n: Inode): Promise<IndexEntry[]> {
    const known = n.ino === ROOT_INO ? undefined : this.o.index.entry(parentOf(n.path), baseOf(n.path));
    if (n.ino !== ROOT_INO && !known?.isDir) {
      const e = await this.entryOf(n);
      if (!e) throw new FsError(E.ENOENT, `${n.path} is gone`);
      if (!e.isDir) throw new FsError(E.ENOTDIR, `${n.path} is not a directory`);
    }
    return this.listing(n.path);
  }

  /** The entry of an inode (the root and workdir directories without asking S3). */
  entryOf(n: Inode): Promise<IndexEntry | undefined> | IndexEntry {
    if (n.ino === ROOT_INO) return this.synthDir("");
    return this.find(parentOf(n.path), baseOf(n.path));
  }

  /**
   * The file at `path`, as S3 has it now within metadataTtl, for an open: an entry confirmed
   * during this run less than metadataTtl ago is used as is (no request); otherwise one HEAD.
   * When S3 does not answer and `haveCopy(entry)` says a local copy of the known version
   * exists, the known entry is used. Throws ENOENT, EISDIR.
   */
  async forOpen(path: string, haveCopy: (e: IndexEntry) => boolean): Promise<IndexEntry> {
    const c = this.classify(path);
    if (c === "workdir-root" || c === "workdir-ancestor") throw new FsError(E.EISDIR, `${path} is a directory`);
    if (c === "inside-workdir") throw new FsError(E.ENOENT, `${path} is inside the workdir's FUSE view`);
    const dir = parentOf(path);
    let e: KnownEntry | undefined = this.o.index.entry(dir, baseOf(path));
    if (!e || !this.fresh(e.seenMs)) {
      const known = e;
      const head = this.heads.run(path, async () => {
        const info = await this.o.store.head(path);
        if (info) return this.remember(this.fileEntry(dir, baseOf(path), info));
        // No such object: it may be (or have become) a directory.
        return (await this.o.store.hasPrefix(path + "/")) ? this.remember(this.synthDir(path)) : null;
      });
      const got = await this.orStale(head, known !== undefined && !known.isDir && haveCopy(known), () => known, `checking ${path}`);
      if (got === null) {
        this.forgetPath(path);
        throw new FsError(E.ENOENT, `${path} was deleted from the bucket`);
      }
      e = got;
    }
    if (!e) throw new FsError(E.ENOENT, `${path} does not exist`);
    if (e.isDir) throw new FsError(E.EISDIR, `${path} is a directory`);
    return e;
  }

  /** What a GET of `e`'s object returned (its metadata is authoritative): recorded as confirmed now. */
  fetched(e: IndexEntry, object: CachedObject): IndexEntry {
    const same = object.etag === e.etag;
    return this.remember({
      ...e, size: object.size, etag: object.etag, mtimeMs: object.mtimeMs,
      mode: object.mode ?? (same ? e.mode : null), seenMs: this.now(),
    });
  }
}
