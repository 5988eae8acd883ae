/**
 * The libfuse3 `dlopen`: the low-level API's symbols.
 *
 * Is: the symbol table, library loading with a clear error when libfuse3 is missing, and
 * reading C strings in callbacks. Is not: session logic (session.ts), struct layouts
 * (structs.ts) or generic libc calls (sys/libc.ts).
 */
import { dlopen, FFIType, CString, type Pointer } from "bun:ffi";

const { ptr: P, i32, u64_fast, f64, cstring, void: V } = {
  ptr: FFIType.ptr,
  i32: FFIType.i32,
  u64_fast: FFIType.u64_fast,
  f64: FFIType.f64,
  cstring: FFIType.cstring,
  void: FFIType.void,
} as const;

const FUSE_SYMBOLS = {
  fuse_pkgversion: { args: [], returns: cstring },
  fuse_session_new: { args: [P, P, u64_fast, P], returns: P },
  fuse_session_mount: { args: [P, cstring], returns: i32 },
  fuse_session_fd: { args: [P], returns: i32 },
  fuse_session_custom_io: { args: [P, P, i32], returns: i32 },
  fuse_session_process_buf: { args: [P, P], returns: V },
  fuse_session_unmount: { args: [P], returns: V },
  fuse_session_destroy: { args: [P], returns: V },
  fuse_session_exit: { args: [P], returns: V },
  fuse_reply_err: { args: [P, i32], returns: i32 },
  fuse_reply_none: { args: [P], returns: V },
  fuse_reply_entry: { args: [P, P], returns: i32 },
  fuse_reply_attr: { args: [P, P, f64], returns: i32 },
  fuse_reply_readlink: { args: [P, cstring], returns: i32 },
  fuse_reply_open: { args: [P, P], returns: i32 },
  fuse_reply_buf: { args: [P, P, u64_fast], returns: i32 },
  fuse_reply_data: { args: [P, P, i32], returns: i32 },
  fuse_reply_statfs: { args: [P, P], returns: i32 },
  fuse_reply_xattr: { args: [P, u64_fast], returns: i32 },
  fuse_add_direntry: { args: [P, P, u64_fast, cstring, P, u64_fast], returns: u64_fast },
  fuse_add_direntry_plus: { args: [P, P, u64_fast, cstring, P, u64_fast], returns: u64_fast },
  fuse_req_interrupted: { args: [P], returns: i32 },
} as const;

/** What to install when libfuse3 cannot be loaded. */
export const LIBFUSE_HINT =
  "bucketfs needs libfuse3 (libfuse3.so.3). On Debian/Ubuntu: apt-get install fuse3 libfuse3-3; " +
  "on RHEL/Rocky: dnf install fuse3 fuse3-libs";

function openFuse() {
  const name = process.env.BUCKETFS_LIBFUSE ?? "libfuse3.so.3";
  try {
    return dlopen(name, FUSE_SYMBOLS);
  } catch (err) {
    throw new Error(`cannot load ${name}: ${(err as Error).message}. ${LIBFUSE_HINT}`, { cause: err });
  }
}

type FuseLib = ReturnType<typeof openFuse>;

let fuseLib: FuseLib | undefined;

/** libfuse3 symbols, loaded on first use. */
export function fuse(): FuseLib["symbols"] {
  fuseLib ??= openFuse();
  return fuseLib.symbols;
}

/** Read a C string argument during a callback (copies it). */
export function readCString(p: Pointer | null): string {
  return p === null || (p as unknown as number) === 0 ? "" : String(new CString(p));
}
