/**
 * The cache root (`cachepath`) as a directory no one else controls, and every create/open
 * under it without following symlinks.
 *
 * Is: the ownership rule (created 0700; an existing root must be a directory owned by the
 * daemon's user and not writable by group or others, and so must each ancestor unless it is
 * sticky, like /tmp), component-wise mkdir that never traverses a symlink, files opened with
 * O_NOFOLLOW (pid file, index), and the one temp-file name scheme with its sweep.
 * Is not: where things live inside the root (service/ lays that out) or key-to-path safety
 * (keys.ts). Root and the daemon's own uid are the only owners trusted.
 */
import {
  closeSync, constants, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, statSync,
  unlinkSync, writeSync, type Stats,
} from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join, resolve } from "node:path";

// node:fs opens every fd with O_CLOEXEC already.
const { O_NOFOLLOW, O_CREAT, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } = constants;

/** A path inside the cache root that bucketfs refuses to use, with what to do about it. */
export class CacheRootError extends Error {
  override readonly name = "CacheRootError";
}

function euid(): number {
  return process.geteuid?.() ?? 0;
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}

function trustedOwner(uid: number): boolean {
  return uid === 0 || uid === euid();
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0");

/**
 * Make `root` usable as the cache root or refuse it. Absent: created (parents too) with mode
 * 0700. Present: it must be a directory owned by us and not writable by group/others; each
 * ancestor must be owned by root or us and, when group/other-writable, sticky (so nobody
 * else can rename our directory away). A symlinked root is accepted only when the link
 * itself is owned by root or us; the directory it names is checked.
 */
export function ensureCacheRoot(root: string): void {
  const abs = resolve(root);
  let st: Stats;
  try {
    st = lstatSync(abs);
  } catch (err) {
    if (!isErrno(err, "ENOENT")) throw err;
    checkAncestors(dirname(abs), abs);
    mkdirSync(abs, { recursive: true, mode: 0o700 });
    const fd = openSync(abs, O_RDONLY | O_NOFOLLOW | constants.O_DIRECTORY);
    try {
      fchmodSync(fd, 0o700); // the umask may have narrowed it, never widened: set it exactly
    } finally {
      closeSync(fd);
    }
    return;
  }
  if (st.isSymbolicLink()) {
    if (!trustedOwner(st.uid)) {
      throw new CacheRootError(
        `cachepath ${abs} is a symlink owned by uid ${st.uid}: another user chose where the cache goes. ` +
          `Fix: remove it (rm ${abs}) and let bucketfs create the directory, or choose another cachepath`,
      );
    }
    st = statSync(abs);
  }
  if (!st.isDirectory()) throw new CacheRootError(`cachepath ${abs} is not a directory; remove it or choose another cachepath`);
  const me = euid();
  if (st.uid !== me) {
    throw new CacheRootError(
      `cachepath ${abs} is owned by uid ${st.uid}, but bucketfs runs as uid ${me}: its owner could plant symlinks ` +
        `that make bucketfs write elsewhere. Fix: chown ${me} ${abs} && chmod 700 ${abs} (after checking what is in it), ` +
        `or choose a cachepath bucketfs creates itself`,
    );
  }
  if ((st.mode & 0o022) !== 0) {
    throw new CacheRootError(
      `cachepath ${abs} has mode ${octal(st.mode)}: writable by group or others, who could plant symlinks ` +
        `that make bucketfs write elsewhere. Fix: chmod 700 ${abs}`,
    );
  }
  checkAncestors(dirname(abs), abs);
}

function checkAncestors(from: string, root: string): void {
  for (let dir = from; ; dir = dirname(dir)) {
    let st: Stats;
    try {
      st = statSync(dir);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
      if (dir === "/") return;
      continue; // created later with mode 0700
    }
    if (!trustedOwner(st.uid)) {
      throw new CacheRootError(
        `cachepath ${root} lies under ${dir}, owned by uid ${st.uid}: that user could swap the cache directory. ` +
          `Fix: choose a cachepath under a directory owned by root (e.g. /var/cache/bucketfs)`,
      );
    }
    if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
      throw new CacheRootError(
        `cachepath ${root} lies under ${dir} (mode ${octal(st.mode)}): writable by others and not sticky, so anyone ` +
          `could swap the cache directory. Fix: chmod go-w ${dir} (or o+t), or choose another cachepath`,
      );
    }
    if (dir === "/") return;
  }
}

/**
 * mkdir -p of `rel` under `root` (which must exist), one component at a time, never through
 * a symlink. A non-directory in the way is removed when `replace` (stale cache entries:
 * unlink does not follow a symlink), else the start is refused with a CacheRootError.
 * `known` memoizes components already made real.
 */
export function mkdirsUnder(root: string, rel: string, opts: { mode?: number; replace?: boolean; known?: Set<string> } = {}): string {
  let cur = root;
  let relCur = "";
  for (const seg of rel.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") throw new CacheRootError(`refusing ".." in a cache path: ${rel}`);
    cur = join(cur, seg);
    relCur = relCur === "" ? seg : `${relCur}/${seg}`;
    if (opts.known?.has(relCur)) continue;
    realDir(cur, opts.mode ?? 0o755, opts.replace === true);
    opts.known?.add(relCur);
  }
  return cur;
}

function realDir(path: string, mode: number, replace: boolean): void {
  for (let i = 0; i < 3; i++) {
    let st: Stats | null = null;
    try {
      st = lstatSync(path);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
    }
    if (st?.isDirectory()) return;
    if (st !== null) {
      if (!replace) {
        throw new CacheRootError(
          `${path} is ${st.isSymbolicLink() ? "a symlink" : "not a directory"}; bucketfs never follows symlinks in its cache. ` +
            `Fix: remove it (rm ${path}) and start again`,
        );
      }
      unlinkSync(path);
    }
    try {
      mkdirSync(path, { mode });
      return;
    } catch (err) {
      if (!isErrno(err, "EEXIST")) throw err; // raced: look again
    }
  }
  throw new CacheRootError(`cannot make ${path} a directory (it keeps changing)`);
}

function noFollowError(path: string, err: unknown): Error {
  if (isErrno(err, "ELOOP")) {
    return new CacheRootError(`${path} is a symlink; bucketfs never follows symlinks in its cache. Fix: remove it (rm ${path})`);
  }
  return err instanceof Error ? err : new Error(String(err));
}

/** Open for writing without following a symlink; a regular file only, mode set to `mode`. */
function openFileNoFollow(path: string, flags: number, mode: number): number {
  let fd: number;
  try {
    fd = openSync(path, flags | O_NOFOLLOW, mode);
  } catch (err) {
    throw noFollowError(path, err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new CacheRootError(`${path} is not a regular file; remove it (rm -r ${path})`);
    if (st.uid === euid() && (st.mode & 0o777) !== mode) fchmodSync(fd, mode);
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** Replace the content of `path` (pid file): O_NOFOLLOW, regular file, mode 0600 by default. */
export function writeFileNoFollow(path: string, data: string, mode = 0o600): void {
  const fd = openFileNoFollow(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

/** Content of `path`, or undefined when absent, a symlink or unreadable (never followed). */
export function readFileNoFollow(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, O_RDONLY | O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    if (!fstatSync(fd).isFile()) return undefined;
    const buf = Buffer.alloc(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

/**
 * Make the sqlite file `path` safe to hand to sqlite (which opens by name): refuse a symlink
 * at the database or at its -wal/-shm/-journal companions, create it 0600 if absent, and
 * narrow an existing one to 0600. sqlite creates the companions with the database's mode.
 */
export function prepareDbFile(path: string): void {
  for (const p of [`${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    try {
      if (lstatSync(p).isSymbolicLink()) throw noFollowError(p, Object.assign(new Error("symlink"), { code: "ELOOP" }));
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
    }
  }
  closeSync(openFileNoFollow(path, O_RDWR | O_CREAT, 0o600));
  for (const p of [`${path}-wal`, `${path}-shm`]) {
    try {
      closeSync(openFileNoFollow(p, O_RDWR, 0o600));
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
    }
  }
}

/** Marks a temp file of an interrupted download (prefetch or object cache); swept at start. */
export const TEMP_FILE_RE = /^\..*\.bucketfs-tmp-[0-9a-f]{12}$/s;
/** Object-cache temp names of bucketfs before one scheme (`..bucketfs-part-<12 hex>`): swept too. */
const LEGACY_TEMP_RE = /^\.\.bucketfs-part-[0-9a-f]{12}$/;
/** Longest part of the real name kept inside a temp file name (bytes), so the temp name fits NAME_MAX. */
const TEMP_STEM_MAX_BYTES = 200;

/** `.<name>.bucketfs-tmp-<12 hex>` beside the final file, the name truncated on a UTF-8 boundary. */
export function tempNameFor(name: string): string {
  let stem = name;
  while (Buffer.byteLength(stem, "utf8") > TEMP_STEM_MAX_BYTES) stem = Array.from(stem).slice(0, -1).join("");
  return `.${stem}.bucketfs-tmp-${randomBytes(6).toString("hex")}`;
}

/**
 * Remove every temp file under `dir` (never following symlinks; unreadable directories are
 * skipped) but those in `keep` (relative paths: the partial files of streamed objects whose
 * checked parts the index keeps, meta-index.ts `cache_parts`). Run at start, before anything
 * downloads. Returns the relative paths removed.
 */
export function sweepTempFiles(dir: string, keep: ReadonlySet<string> = new Set()): string[] {
  const removed: string[] = [];
  const stack = [""];
  while (stack.length > 0) {
    const rel = stack.pop() as string;
    let names: Buffer[];
    try {
      names = readdirSync(rel === "" ? dir : join(dir, rel), { encoding: "buffer" });
    } catch {
      continue;
    }
    for (const raw of names) {
      const name = raw.toString("utf8");
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const abs = join(dir, childRel);
      let st: Stats;
      try {
        st = lstatSync(abs);
      } catch {
        continue;
      }
      if (st.isDirectory()) stack.push(childRel);
      else if (st.isFile() && (TEMP_FILE_RE.test(name) || LEGACY_TEMP_RE.test(name)) && !keep.has(childRel)) {
        try {
          unlinkSync(abs);
          removed.push(childRel);
        } catch {
          /* gone meanwhile */
        }
      }
    }
  }
  return removed;
}
