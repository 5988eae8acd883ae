/**
 * The read-only namespace of one bucket, with lazy download: FsOps over the Namespace and the
 * ObjectCache.
 *
 * Is: file and directory handles and the glue of each FUSE-independent op. What exists and
 * how fresh it is belongs to the Namespace (namespace.ts: listings, lookups, HEADs, the
 * workdir overlay); local copies and keep-cache to the ObjectCache. Files are downloaded
 * whole into the cache on first open (large ones streamed) and read from there. Extended
 * attributes: none (listxattr empty; getxattr ENOSYS once, so the kernel stops asking: see below).
 * Is not: FFI (fuse/), S3 details (store/), the workdir transaction (service/).
 */
import { closeSync, openSync, read as fsRead, statfsSync, constants as FS } from "node:fs";
import type { ObjectStore } from "../store/types.ts";
import type { IndexEntry, MetaIndex } from "../cache/meta-index.ts";
import type { ObjectCache } from "../cache/object-cache.ts";
import type { PartialObject } from "../cache/partial-object.ts";
import type { ReadAhead } from "../cache/read-ahead.ts";
import { nameProblem, NAME_MAX } from "../cache/keys.ts";
import { E, FsError } from "./errors.ts";
import { ROOT_INO } from "./inodes.ts";
import { Namespace, baseOf, join, parentOf } from "./namespace.ts";
import { DirReadAhead } from "./dir-read-ahead.ts";
import type { Attr, DirEntry, EntryReply, FsOps, OpenReply, ReadReply, StatFs } from "./types.ts";
import type { Logger } from "../util/log.ts";

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
  /** Clock for metadata freshness (tests). */
  now?: () => number;
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
  /** This reader's read-ahead state (streaming read): judged by its own READs, not other readers'. */
  ra: ReadAhead | undefined;
}

/** The copy path of read(): an async pread into a fresh buffer (threadpool), then reply bytes. */
function copyRead(fd: number, size: number, offset: number): Promise<ReadReply> {
  const buf = Buffer.allocUnsafe(size);
  return new Promise((resolve, reject) =>
    fsRead(fd, buf, 0, size, offset, (err, n) => (err ? reject(err) : resolve({ kind: "bytes", data: buf.subarray(0, n) }))),
  );
}

export class BucketFs implements FsOps {
  readonly ns: Namespace;
  private dirHandles = new Map<number, DirSnapshot>();
  private fileHandles = new Map<number, Handle>();
  private nextFh = 1;
  private readAhead: DirReadAhead;
  /** Opens between their start and their reply (mostly waiting for a fetch). */
  private opening = 0;
  /** Listing version (listed-at time) each directory inode was last opened with. */
  private dirVersionSeen = new Map<number, number>();

  constructor(private o: BucketFsOptions) {
    this.ns = new Namespace({
      bucket: o.bucket, store: o.store, index: o.index, workdir: o.workdir, metadataTtlS: o.metadataTtlS,
      uid: o.uid, gid: o.gid, log: o.log, now: o.now,
    });
    this.readAhead = new DirReadAhead({
      after: (dir, name, limit) => this.ns.entriesAfter(dir, name, limit),
      prefetch: (e) => void o.objects.prefetch(join(e.dir, e.name), e.etag, e.size),
      // Another open already waits: parallel readers keep the fetches busy themselves.
      busy: () => this.opening > 1,
    });
  }

  entryTimeout(dirIno: number): number {
    const n = this.ns.inodes.get(dirIno);
    return n ? this.ns.timeoutIn(n.path) : this.o.metadataTtlS;
  }

  async lookup(parent: number, name: string): Promise<EntryReply> {
    const p = this.ns.node(parent);
    const bad = nameProblem(name);
    if (bad) throw new FsError(Buffer.byteLength(name) > NAME_MAX ? E.ENAMETOOLONG : E.ENOENT, `bad name ${name}`);
    const e = await this.ns.find(p.path, name);
    if (!e) return { attr: undefined, attrTimeout: 0, entryTimeout: this.ns.negativeTimeout() };
    const n = this.ns.inodes.ensure(join(p.path, name));
    this.ns.inodes.ref(n.ino);
    const t = this.ns.timeoutIn(p.path);
    return { attr: this.ns.attrOf(n.ino, e), attrTimeout: t, entryTimeout: t };
  }

  forget(ino: number, n: number): void {
    this.ns.inodes.forget(ino, n);
    if (!this.ns.inodes.get(ino)) this.dirVersionSeen.delete(ino);
  }

  remember(ino: number): void {
    this.ns.inodes.ref(ino);
  }

  async getattr(ino: number): Promise<{ attr: Attr; timeout: number }> {
    const n = this.ns.node(ino);
    const e = await this.ns.entryOf(n);
    if (!e) throw new FsError(E.ENOENT, `${n.path} is gone`);
    return { attr: this.ns.attrOf(ino, e), timeout: this.ns.timeoutIn(parentOf(n.path)) };
  }

  readlink(): string {
    throw new FsError(E.EINVAL, "no symlinks outside the workdir");
  }

  async open(ino: number, flags: number): Promise<OpenReply> {
    const accmode = flags & 3;
    if (accmode !== FS.O_RDONLY || flags & FS.O_TRUNC) throw new FsError(E.EROFS, "read-only outside the workdir");
    const key = this.ns.node(ino).path;
    this.opening++;
    try {
      return await this.openFile(key);
    } finally {
      this.opening--;
    }
  }

  private async openFile(key: string): Promise<OpenReply> {
    const { objects } = this.o;
    const e = await this.ns.forOpen(key, (known) => objects.peek(key, known.etag) !== undefined);
    this.readAhead.opened(parentOf(key), baseOf(key));
    const got = await objects.acquire(key, e.etag, e.size, e.mtimeMs);
    if (got.changed) this.ns.fetched(e, got.object);
    let fd: number;
    try {
      fd = openSync(got.path, "r");
    } catch (err) {
      objects.release(key, got.partial);
      throw err;
    }
    const fh = this.nextFh++;
    this.fileHandles.set(fh, { fd, key, partial: got.partial, ra: got.partial?.reader() });
    // A complete copy at this ETag: the kernel may read it itself (passthrough); the same ETag
    // is the same bytes, so opens of one inode may share a backing file. A copy still being
    // streamed is served through read() until it is complete.
    const backing = got.partial ? undefined : { fd, version: got.object.etag };
    return { fh, keepCache: got.keepCache, backing };
  }

  read(_ino: number, fh: number, size: number, offset: number): ReadReply | Promise<ReadReply> {
    const h = this.fileHandles.get(fh);
    if (!h) throw new FsError(E.EBADF, `bad file handle ${fh}`);
    const serve = (): ReadReply | Promise<ReadReply> => (this.o.copyReads ? copyRead(h.fd, size, offset) : { kind: "fd", fd: h.fd, pos: offset, size });
    if (!h.partial || h.partial.done) return serve();
    return h.partial.ensure(offset, size, h.ra).then(serve);
  }

  release(_ino: number, fh: number): void {
    const h = this.fileHandles.get(fh);
    if (!h) return;
    this.fileHandles.delete(fh);
    closeSync(h.fd);
    // The kernel closed its last reference (RELEASE): the object may be evicted from now on.
    this.o.objects.release(h.key, h.partial);
  }

  async opendir(ino: number): Promise<OpenReply> {
    const n = this.ns.node(ino);
    const entries = await this.ns.openDir(n);
    const fh = this.nextFh++;
    this.dirHandles.set(fh, { dir: n.path, entries });
    // The same listing as the kernel got last time (same LIST, or an always-empty workdir view).
    const version = this.ns.listingVersion(n.path) ?? -1;
    const keepCache = version !== -1 && this.dirVersionSeen.get(ino) === version;
    this.dirVersionSeen.set(ino, version);
    return { fh, keepCache };
  }

  readdir(ino: number, fh: number, offset: number, max: number): DirEntry[] {
    const snap = this.dirHandles.get(fh);
    if (!snap) throw new FsError(E.EBADF, `bad directory handle ${fh}`);
    const out: DirEntry[] = [];
    const self = this.ns.dirAttr(ino, snap.dir);
    if (offset === 0) out.push({ name: ".", attr: self });
    if (offset <= 1) {
      const parent = snap.dir === "" ? ROOT_INO : this.ns.inodes.ensure(parentOf(snap.dir)).ino;
      out.push({ name: "..", attr: { ...self, ino: parent } });
    }
    const from = Math.max(0, offset - 2);
    for (const e of snap.entries.slice(from, from + Math.max(0, max - out.length))) {
      const n = this.ns.inodes.ensure(join(snap.dir, e.name));
      out.push({ name: e.name, attr: this.ns.attrOf(n.ino, e) });
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

  /**
   * No extended attributes. ENOSYS, not ENODATA as a read-only ext4 answers: on ENOSYS the kernel
   * stops sending GETXATTR for the rest of the mount and answers EOPNOTSUPP itself, while every
   * ENODATA is a round trip through this thread. `ls -l` asks two names per file (security.selinux,
   * system.posix_acl_access): 20,003 GETXATTRs and 4.0 s for a warm `ls -l` of 10,000 objects with
   * ENODATA, against one request with ENOSYS. Copy tools (rsync -X, cp -a) call listxattr first,
   * which answers an empty list as ext4 does, so they never ask.
   */
  getxattr(ino: number, name: string): never {
    this.ns.node(ino);
    throw new FsError(E.ENOSYS, `no extended attributes (asked for ${name})`);
  }

  /** No extended attributes: an empty list. */
  listxattr(ino: number): string[] {
    this.ns.node(ino);
    return [];
  }

  /** Close every open file handle (at unmount). */
  closeAll(): void {
    for (const h of this.fileHandles.values()) {
      closeSync(h.fd);
      this.o.objects.release(h.key, h.partial);
    }
    this.fileHandles.clear();
    this.dirHandles.clear();
  }
}
