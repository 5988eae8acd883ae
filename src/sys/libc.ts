/**
 * The generic libc calls bucketfs makes through bun:ffi: mount/umount2 (bind and stale
 * mounts), execve (threadpool re-exec), syncfs (one sync of the cache at a clean stop), flock
 * (the pid file's lock: one daemon per bucket and cache), the
 * AF_UNIX datagram calls of sd_notify, errno access and C-string helpers.
 *
 * Is: the one libc `dlopen` and the only FFI outside fuse/ (a leaf: imports nothing of
 * bucketfs). Is not: libfuse (fuse/ffi.ts) or anything /dev/fuse specific.
 */
import { dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";

const LIBC_SYMBOLS = {
  umount2: { args: [FFIType.cstring, FFIType.i32], returns: FFIType.i32 },
  mount: { args: [FFIType.cstring, FFIType.cstring, FFIType.cstring, FFIType.u64_fast, FFIType.ptr], returns: FFIType.i32 },
  execve: { args: [FFIType.cstring, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
  strerror: { args: [FFIType.i32], returns: FFIType.cstring },
  socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  sendto: { args: [FFIType.i32, FFIType.ptr, FFIType.u64_fast, FFIType.i32, FFIType.ptr, FFIType.u64_fast], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  syncfs: { args: [FFIType.i32], returns: FFIType.i32 },
  flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
} as const;

/** flock(2) operations. */
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const EWOULDBLOCK = 11;

const openLibc = () => dlopen("libc.so.6", LIBC_SYMBOLS);
type LibcLib = ReturnType<typeof openLibc>;
let libcLib: LibcLib | undefined;

/** libc symbols, loaded on first use. */
export function libc(): LibcLib["symbols"] {
  libcLib ??= openLibc();
  return libcLib.symbols;
}

/** errno after a failed libc call (read immediately after the call). */
export function lastErrno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : read.i32(p as Pointer, 0);
}

export function strerror(errno: number): string {
  return String(libc().strerror(errno) ?? `errno ${errno}`);
}

/** A NUL-terminated copy of a JS string, as a Buffer (keep it referenced while C may read it). */
export function cstr(s: string): Buffer {
  return Buffer.from(s + "\0", "utf8");
}

/** Build a NULL-terminated `char*[]`; returns the array and the strings so both stay alive. */
export function cstrArray(items: string[]): { array: BigUint64Array; keep: Buffer[] } {
  const keep = items.map(cstr);
  const array = new BigUint64Array(items.length + 1);
  keep.forEach((b, i) => (array[i] = BigInt(ptr(b))));
  return { array, keep };
}

export const MNT_DETACH = 2;
