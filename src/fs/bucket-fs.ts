/**
 * The read-only namespace of one bucket, with lazy download: the filesystem semantics.
 *
 * Is: FsOps over an ObjectStore, the sqlite MetaIndex and the ObjectCache. Directory
 * listings come from one paged LIST each and are trusted for `metadataTtl` seconds; a path
 * never listed is answered by a HEAD plus a prefix probe; files are downloaded whole into
 * the cache on first open and read from there. Keys that cannot be file names (see
 * cache/keys.ts) are skipped with one log line each. The workdir and its ancestors always
 * exist as directories; the workdir itself is empty here because the daemon bind-mounts
 * the local workdir over it. Is not: FFI (fuse/), S3 details (store/), the workdir
 * transaction (service/).
 */
import { closeSync, openSync, read as fsRead, statfsSync, constants as FS } from "node:fs";
import { StoreError, type ObjectStore, type ObjectInfo } from "../store/types.ts";
import { objectMode, objectMtimeMs } from "../store/meta.ts";
import type { IndexEntry, MetaIndex } from "../cache/meta-index.ts";
import type { ObjectCache } from "../cache/object-cache.ts";
import type { PartialObject } from "../cache/partial-object.ts";
import { describeProblem, nameProblem, NAME_MAX } from "../cache/keys.ts";
import { E, FsError } from "./errors.ts";
import { InodeTable, ROOT_INO, type Inode } from "./inodes.ts";
import type { Attr, DirEntry, EntryReply, FsOps, OpenReply, ReadReply, StatFs } from "./types.ts";
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
const STALE_GRACE_MS = 3000;

export interface BucketFsOptions {
  bucket: string;
  store: ObjectStore;
  index: MetaIndex;
  objects: ObjectCache;
  /** Workdir relative to the bucket root ("workdir", "runs/a"), or undefined. */
  workdir: string | undefined;
  metadataTtlS: number;
  /**
   * Serve cached reads by reading into a JS buffer and replying with it, instead of handing
   * libfuse the fd range (zero-copy through JS). Only for the benchmark that compares the two.
   */
  copyReads?: boolean;
  uid: number;
  gid: number;
  log: Logger;
}

interface DirSnapshot {
  dir: string;
  entries: IndexEntry[];
}

interface Handle {
  fd: number;
  key: string;
  /** Set while the object is still being fetched (streaming read). */
  partial: PartialObject | undefined;
}

/** The copy path of read(): an async pread into a fresh buffer (threadpool), then reply bytes. */
function copyRead(fd: number, size: number, offset: number): Promise<ReadReply> {
  const buf = Buffer.allocUnsafe(size);
  return new Promise((resolve, reject) =>
    fsRead(fd, buf, 0, size, offset, (err, n) => (err ? reject(err) : resolve({ kind: "bytes", data: buf.subarray(0, n) }))),
  );
}

const parentOf = (p: string): string => (p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "");
const baseOf = (p: string): string => p.slice(p.lastIndexOf("/") + 1);
const join = (dir: string, name: string): string => (dir === "" ? name : `${dir}/${name}`);
const prefixOf = (dir: string): string => (dir === "" ? "" : `${dir}/`);

export class BucketFs implements FsOps {
  private inodes = new InodeTable();
  private dirHandles = new Map<number, DirSnapshot>();
  private fileHandles = new Map<number, Handle>();
  private nextFh = 1;
  private relisting = new Map<string, Promise<IndexEntry[]>>();
  private warned = new Set<string>();
  /** Listing version (listed-at time) each directory inode was last opened with. */
  private dirVersionSeen = new Map<number, number>();
  /** Cache generation of each key at its last open, to decide keep_cache. */
  private openedGen = new Map<string, number>();
  private readonly startMs = Date.now();
  private readonly ttlMs: number;

  constructor(private o: BucketFsOptions) {
    this.ttlMs = o.metadataTtlS * 1000;
  }

  // ---- namespace helpers -------------------------------------------------------------

  /** The workdir itself or a directory inside it: FUSE shows it empty (the bind mount covers it). */
  private inWorkdir(path: string): boolean {
    const w = this.o.workdir;
    return w !== undefined && (path === w || path.startsWith(w + "/"));
  }

  /** A proper ancestor of the workdir (always a directory, even with nothing in S3). */
  private isWorkdirAncestor(path: string): boolean {
    const w = this.o.workdir;
    return w !== undefined && path !== w && (path === "" || w.startsWith(path + "/"));
  }

  private node(ino: number): Inode {
    const n = this.inodes.get(ino);
    if (!n) throw new FsError(E.ESTALE, `unknown inode ${ino}`);
    return n;
  }

  private warnOnce(key: string, msg: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.o.log.warn(msg);
  }

  private dirAttr(ino: number, path: string): Attr {
    const perm = this.inWorkdir(path) ? WORKDIR_PERM : DIR_PERM;
    return { ino, mode: S_IFDIR | perm, nlink: 2, uid: this.o.uid, gid: this.o.gid, size: 4096, mtimeMs: this.startMs };
  }

  private attrOf(ino: number, e: IndexEntry): Attr {
    if (e.isDir) return this.dirAttr(ino, join(e.dir, e.name));
    const perm = (e.mode ?? DEFAULT_FILE_PERM) & ~0o222 & 0o7777;
    return { ino, mode: S_IFREG | perm, nlink: 1, uid: this.o.uid, gid: this.o.gid, size: e.size, mtimeMs: e.mtimeMs };
  }

  private synthDir(path: string): IndexEntry {
    return { dir: parentOf(path), name: baseOf(path), isDir: true, size: 0, mtimeMs: this.startMs, etag: "", mode: null };
  }

  private fileEntry(dir: string, name: string, o: ObjectInfo): IndexEntry {
    return {
      dir, name, isDir: false, size: o.size, mtimeMs: o.meta ? objectMtimeMs(o) : o.lastModifiedMs, etag: o.etag,
      mode: o.meta ? objectMode(o) : null,
    };
  }

  // ---- listings ----------------------------------------------------------------------

  private fresh(at: number | undefined): boolean {
    return at !== undefined && Date.now() - at < this.ttlMs;
  }

  /** The entries of `dir` (fresh from the index, or listed now), workdir ancestors included. */
  private async listing(dir: string): Promise<IndexEntry[]> {
    if (this.inWorkdir(dir)) return [];
    const listedAt = this.o.index.listedAt(dir);
    const entries = this.fresh(listedAt)
      ? this.o.index.list(dir)
      : await this.orStale(this.relist(dir), listedAt !== undefined, () => this.o.index.list(dir), `listing /${dir}`);
    return this.withWorkdir(dir, entries);
  }

  private withWorkdir(dir: string, entries: IndexEntry[]): IndexEntry[] {
    const w = this.o.workdir;
    if (w === undefined || !this.isWorkdirAncestor(dir)) return entries;
    const next = w.slice(prefixOf(dir).length).split("/")[0] ?? "";
    const rest = entries.filter((e) => e.name !== next);
    rest.push(this.synthDir(join(dir, next)));
    return rest.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * `p`, unless S3 is unreachable or slow and an older answer exists (`haveOld`): then the
   * older answer from `old()` after STALE_GRACE_MS or on a retryable error, with one warning.
   */
  private async orStale<T, U>(p: Promise<T>, haveOld: boolean, old: () => U, what: string): Promise<T | U> {
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

  private relist(dir: string): Promise<IndexEntry[]> {
    let p = this.relisting.get(dir);
    if (!p) {
      p = this.listNow(dir).finally(() => this.relisting.delete(dir));
      this.relisting.set(dir, p);
    }
    return p;
  }

  private async listNow(dir: string): Promise<IndexEntry[]> {
    const prefix = prefixOf(dir);
    const t0 = performance.now();
    const l = await this.o.store.listDir(prefix);
    const t1 = performance.now();
    const byName = new Map<string, IndexEntry>();
    for (const p of l.prefixes) {
      const name = p.slice(prefix.length, -1);
      const bad = nameProblem(name);
      if (bad) {
        this.warnOnce(p, `skipping prefix ${JSON.stringify(p)} in ${this.o.bucket}: ${describeProblem(bad)}`);
        continue;
      }
      byName.set(name, { dir, name, isDir: true, size: 0, mtimeMs: this.startMs, etag: "", mode: null });
    }
    for (const o of l.objects) {
      const name = o.key.slice(prefix.length);
      const bad = nameProblem(name);
      if (bad) {
        this.warnOnce(o.key, `skipping key ${JSON.stringify(o.key)} in ${this.o.bucket}: ${describeProblem(bad)}`);
        continue;
      }
      if (byName.has(name)) {
        this.warnOnce(o.key, `key ${JSON.stringify(o.key)} in ${this.o.bucket} is also a prefix; shown as a directory`);
        continue;
      }
      const old = this.o.index.entry(dir, name);
      const e = this.fileEntry(dir, name, o);
      // Metadata learned at download time (mode, mtime) stays while the object is unchanged.
      if (old && !old.isDir && old.etag === o.etag) {
        e.mode = old.mode;
        e.mtimeMs = old.mtimeMs;
      }
      byName.set(name, e);
    }
    const entries = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.o.index.replaceDir(dir, entries);
    const t2 = performance.now();
    this.o.log.debug(`listed /${dir}: ${entries.length} entries (LIST ${(t1 - t0).toFixed(0)} ms, index ${(t2 - t1).toFixed(0)} ms)`);
    return entries;
  }

  /** Find one name: from a fresh listing, else HEAD + prefix probe. Undefined when absent. */
  private async find(dir: string, name: string): Promise<IndexEntry | undefined> {
    const path = join(dir, name);
    if (path === this.o.workdir || this.isWorkdirAncestor(path)) return this.synthDir(path);
    // Inside the workdir FUSE shows nothing: the bind mount of the local workdir covers it.
    if (this.inWorkdir(dir)) return undefined;
    const listedAt = this.o.index.listedAt(dir);
    if (this.fresh(listedAt)) return this.o.index.entry(dir, name);
    const known = this.o.index.entry(dir, name);
    const probe = Promise.all([this.o.store.hasPrefix(path + "/"), this.o.store.head(path)]);
    const haveOld = known !== undefined || listedAt !== undefined;
    const got = await this.orStale(probe, haveOld, () => undefined, `looking up /${path}`);
    if (got === undefined) return known;
    const [isDir, head] = got;
    if (isDir) {
      const e = this.synthDir(path);
      this.o.index.putEntry(e);
      return e;
    }
    if (!head) return undefined;
    const e = this.fileEntry(dir, name, head);
    this.o.index.putEntry(e);
    return e;
  }

  private async entryOf(n: Inode): Promise<IndexEntry | undefined> {
    if (n.ino === ROOT_INO) return this.synthDir("");
    const dir = parentOf(n.path);
    const name = baseOf(n.path);
    const known = this.o.index.entry(dir, name);
    if (known && !this.inWorkdir(n.path)) return known;
    return this.find(dir, name);
  }

  // ---- FsOps -------------------------------------------------------------------------

  entryTimeout(dirIno: number): number {
    const n = this.inodes.get(dirIno);
    return n ? this.timeoutIn(n.path) : this.o.metadataTtlS;
  }

  /** Kernel cache time for entries in directory `dir`: short inside the workdir. */
  private timeoutIn(dir: string): number {
    return this.inWorkdir(dir) ? 1 : this.o.metadataTtlS;
  }

  async lookup(parent: number, name: string): Promise<EntryReply> {
    const p = this.node(parent);
    const bad = nameProblem(name);
    if (bad) throw new FsError(Buffer.byteLength(name) > NAME_MAX ? E.ENAMETOOLONG : E.ENOENT, `bad name ${name}`);
    const e = await this.find(p.path, name);
    if (!e) return { attr: undefined, attrTimeout: 0, entryTimeout: Math.min(NEGATIVE_TTL_S, this.o.metadataTtlS) };
    const n = this.inodes.ensure(join(p.path, name));
    this.inodes.ref(n.ino);
    const t = this.entryTimeout(parent);
    return { attr: this.attrOf(n.ino, e), attrTimeout: t, entryTimeout: t };
  }

  forget(ino: number, n: number): void {
    this.inodes.forget(ino, n);
    if (!this.inodes.get(ino)) this.dirVersionSeen.delete(ino);
  }

  remember(ino: number): void {
    this.inodes.ref(ino);
  }

  async getattr(ino: number): Promise<{ attr: Attr; timeout: number }> {
    const n = this.node(ino);
    const e = await this.entryOf(n);
    if (!e) throw new FsError(E.ENOENT, `${n.path} is gone`);
    return { attr: this.attrOf(ino, e), timeout: this.timeoutIn(parentOf(n.path)) };
  }

  readlink(): string {
    throw new FsError(E.EINVAL, "no symlinks outside the workdir");
  }

  async open(ino: number, flags: number): Promise<OpenReply> {
    const accmode = flags & 3;
    if (accmode !== FS.O_RDONLY || flags & FS.O_TRUNC) throw new FsError(E.EROFS, "read-only outside the workdir");
    const n = this.node(ino);
    let e = await this.entryOf(n);
    if (!e) throw new FsError(E.ENOENT, `${n.path} is gone`);
    if (e.isDir) throw new FsError(E.EISDIR, `${n.path} is a directory`);
    const key = n.path;
    // A listing older than the TTL may name an old version: check the ETag before using a cached copy.
    if (!this.fresh(this.o.index.listedAt(e.dir))) {
      const haveCopy = this.o.objects.peek(key, e.etag) !== undefined;
      const head = await this.orStale(this.o.store.head(key), haveCopy, () => "cached" as const, `checking ${key}`);
      if (head === null) throw new FsError(E.ENOENT, `${key} was deleted from the bucket`);
      if (head !== "cached") {
        e = this.fileEntry(e.dir, e.name, head);
        this.o.index.putEntry(e);
      }
    }
    const got = await this.o.objects.acquire(key, e.etag, e.size, e.mtimeMs);
    const cached = got.partial ? undefined : this.o.index.cached(key);
    if (cached && got.fresh) {
      this.o.index.putEntry({ ...e, size: cached.size, etag: cached.etag, mtimeMs: cached.mtimeMs, mode: cached.mode });
    }
    const gen = this.o.objects.generation(key);
    const keepCache = !got.fresh && this.openedGen.get(key) === gen;
    this.openedGen.set(key, gen);
    let fd: number;
    try {
      fd = openSync(got.path, "r");
    } catch (err) {
      if (got.partial) this.o.objects.releasePartial(got.partial);
      throw err;
    }
    const fh = this.nextFh++;
    this.fileHandles.set(fh, { fd, key, partial: got.partial });
    return { fh, keepCache };
  }

  read(_ino: number, fh: number, size: number, offset: number): ReadReply | Promise<ReadReply> {
    const h = this.fileHandles.get(fh);
    if (!h) throw new FsError(E.EBADF, `bad file handle ${fh}`);
    const serve = (): ReadReply | Promise<ReadReply> => (this.o.copyReads ? copyRead(h.fd, size, offset) : { kind: "fd", fd: h.fd, pos: offset, size });
    if (!h.partial || h.partial.complete) return serve();
    return h.partial.ensure(offset, size).then(serve);
  }

  release(_ino: number, fh: number): void {
    const h = this.fileHandles.get(fh);
    if (!h) return;
    this.fileHandles.delete(fh);
    closeSync(h.fd);
    if (h.partial) this.o.objects.releasePartial(h.partial);
  }

  async opendir(ino: number): Promise<OpenReply> {
    const n = this.node(ino);
    const e = await this.entryOf(n);
    if (!e) throw new FsError(E.ENOENT, `${n.path} is gone`);
    if (!e.isDir) throw new FsError(E.ENOTDIR, `${n.path} is not a directory`);
    const entries = await this.listing(n.path);
    const fh = this.nextFh++;
    this.dirHandles.set(fh, { dir: n.path, entries });
    // The same listing as the kernel got last time (same LIST, or an always-empty workdir view).
    const version = this.inWorkdir(n.path) ? 0 : (this.o.index.listedAt(n.path) ?? -1);
    const keepCache = version !== -1 && this.dirVersionSeen.get(ino) === version;
    this.dirVersionSeen.set(ino, version);
    return { fh, keepCache };
  }

  readdir(ino: number, fh: number, offset: number, max: number): DirEntry[] {
    const snap = this.dirHandles.get(fh);
    if (!snap) throw new FsError(E.EBADF, `bad directory handle ${fh}`);
    const out: DirEntry[] = [];
    const self = this.dirAttr(ino, snap.dir);
    if (offset === 0) out.push({ name: ".", attr: self });
    if (offset <= 1) {
      const parent = snap.dir === "" ? ROOT_INO : this.inodes.ensure(parentOf(snap.dir)).ino;
      out.push({ name: "..", attr: { ...self, ino: parent } });
    }
    const from = Math.max(0, offset - 2);
    for (const e of snap.entries.slice(from, from + Math.max(0, max - out.length))) {
      const n = this.inodes.ensure(join(snap.dir, e.name));
      out.push({ name: e.name, attr: this.attrOf(n.ino, e) });
    }
    return out;
  }

  releasedir(_ino: number, fh: number): void {
    this.dirHandles.delete(fh);
  }

  statfs(): StatFs {
    const s = statfsSync(this.o.objects.root);
    return { bsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, namemax: NAME_MAX };
  }

  /** Close every open file handle (at unmount). */
  closeAll(): void {
    for (const h of this.fileHandles.values()) {
      closeSync(h.fd);
      if (h.partial) this.o.objects.releasePartial(h.partial);
    }
    this.fileHandles.clear();
    this.dirHandles.clear();
  }
}
