/**
 * The contract between the FUSE adapter (src/fuse) and a filesystem implementation.
 *
 * Is: plain data types and the `FsOps` interface, free of FFI and of S3. Is not: an
 * implementation (bucket-fs.ts) or the kernel protocol (fuse/adapter.ts).
 */
/** File attributes as the filesystem layer describes them (the adapter encodes a `struct stat`). */
export interface Attr {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  ctimeMs?: number;
  atimeMs?: number;
}

/** Filesystem statistics (the adapter encodes a `struct statvfs`). */
export interface StatFs {
  bsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

export interface EntryReply {
  /** Undefined: a negative entry (ENOENT cached by the kernel for entryTimeout). */
  attr: Attr | undefined;
  attrTimeout: number;
  entryTimeout: number;
}

export interface OpenReply {
  fh: number;
  /** Keep the kernel page cache of this file (its content is unchanged since the last open). */
  keepCache: boolean;
  /**
   * Set when the open file is a complete local copy that stays as it is while open: the kernel
   * may then read `fd` itself (FUSE passthrough) and no READ reaches the filesystem. `version`
   * names the content (opens of one inode share a backing file only when it is equal).
   */
  backing?: { fd: number; version: string };
}

/** Data for a read reply: bytes, or a range of a local file that libfuse reads itself. */
export type ReadReply = { kind: "bytes"; data: Uint8Array } | { kind: "fd"; fd: number; pos: number; size: number };

export interface DirEntry {
  name: string;
  attr: Attr;
}

export interface FsOps {
  lookup(parent: number, name: string): Promise<EntryReply> | EntryReply;
  /** The kernel dropped `n` references to `ino`. Never replies. */
  forget(ino: number, n: number): void;
  getattr(ino: number): Promise<{ attr: Attr; timeout: number }> | { attr: Attr; timeout: number };
  readlink(ino: number): Promise<string> | string;
  open(ino: number, flags: number): Promise<OpenReply> | OpenReply;
  read(ino: number, fh: number, size: number, offset: number): Promise<ReadReply> | ReadReply;
  release(ino: number, fh: number): Promise<void> | void;
  /**
   * A handle whose listing snapshot readdir pages through. keepCache: the listing is the same
   * as at the previous opendir, so the kernel may serve readdir from its own cache.
   */
  opendir(ino: number): Promise<OpenReply> | OpenReply;
  /**
   * Up to `max` entries from index `offset` on (including "." and ".."), for the snapshot `fh`.
   * The adapter asks only for what can fit in the kernel's buffer.
   */
  readdir(ino: number, fh: number, offset: number, max: number): Promise<DirEntry[]> | DirEntry[];
  releasedir(ino: number, fh: number): void;
  /** readdirplus handed `ino` to the kernel: count it as one lookup. */
  remember(ino: number): void;
  statfs(): StatFs;
  /** The value of extended attribute `name` (throw FsError ENODATA when there is none). */
  getxattr(ino: number, name: string): Promise<Uint8Array> | Uint8Array;
  /** The names of the extended attributes of `ino`. */
  listxattr(ino: number): Promise<string[]> | string[];
  /** Entry/attr timeout for readdirplus entries of this directory. */
  entryTimeout(dirIno: number): number;
}
