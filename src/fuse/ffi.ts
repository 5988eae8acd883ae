/**
 * The libfuse3 `dlopen`s: the low-level API's symbols, for every libfuse from 3.3 on.
 *
 * Is: the symbols every 3.x has (one dlopen; a clear error when libfuse3 is missing or
 * older than 3.3), the newer ones in separate optional dlopens (Bun's dlopen fails as a whole
 * when one listed symbol is missing), the library's version read once, and reading C strings
 * in callbacks. Is not: session logic (session.ts), struct layouts per version (structs.ts)
 * or generic libc calls (sys/libc.ts).
 */
import { dlopen, FFIType, CString, type Pointer } from "bun:ffi";
import { envSwitch } from "../util/env.ts";

const { ptr: P, i32, u64_fast, f64, cstring, void: V } = {
  ptr: FFIType.ptr,
  i32: FFIType.i32,
  u64_fast: FFIType.u64_fast,
  f64: FFIType.f64,
  cstring: FFIType.cstring,
  void: FFIType.void,
} as const;

/** In every libfuse 3.x (FUSE_3.0 in its symbol version script). */
const FUSE_SYMBOLS = {
  fuse_pkgversion: { args: [], returns: cstring },
  fuse_version: { args: [], returns: i32 },
  fuse_session_new: { args: [P, P, u64_fast, P], returns: P },
  fuse_session_mount: { args: [P, cstring], returns: i32 },
  fuse_session_fd: { args: [P], returns: i32 },
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
  "bucketfs needs libfuse3 3.3 or newer (libfuse3.so.3, or libfuse3.so.4 from 3.17 on). On Debian/Ubuntu: " +
  "apt-get install fuse3 libfuse3-3 (Debian 13: libfuse3-4); on RHEL/Rocky/Fedora: dnf install fuse3 fuse3-libs";

/**
 * 3.14-3.16: fuse_session_custom_io(se, io, fd). From 3.17 the unversioned name resolves to
 * fuse_session_custom_io@@FUSE_3.17, which takes (se, io, op_size, fd): never looked up there.
 */
const CUSTOM_IO_SYMBOLS = { fuse_session_custom_io: { args: [P, P, i32], returns: i32 } } as const;
/**
 * 3.17+: what the 3.17 header's fuse_session_new() macro calls (with the struct libfuse_version
 * the program was built against), and the passthrough API: a backing id for an fd (0 and errno
 * on failure), and its release.
 */
const V317_SYMBOLS = {
  fuse_session_new_versioned: { args: [P, P, u64_fast, P, P], returns: P },
  fuse_passthrough_open: { args: [P, i32], returns: i32 },
  fuse_passthrough_close: { args: [P, i32], returns: i32 },
} as const;

/**
 * The sonames tried when BUCKETFS_LIBFUSE is unset: 3.17 bumped the soname to libfuse3.so.4
 * (Debian 13's libfuse3-4, current Fedora), 3.0-3.16 are libfuse3.so.3. The newer first.
 */
const SONAMES = ["libfuse3.so.4", "libfuse3.so.3"] as const;

/** The name that loaded (set by openFuse). */
let loadedName: string | undefined;

function openFuse() {
  const chosen = envSwitch("BUCKETFS_LIBFUSE");
  const names = chosen !== undefined ? [chosen] : [...SONAMES];
  const errors: string[] = [];
  for (const name of names) {
    try {
      const lib = dlopen(name, FUSE_SYMBOLS);
      loadedName = name;
      return lib;
    } catch (err) {
      errors.push(`${name}: ${(err as Error).message}`);
    }
  }
  throw new Error(`cannot load libfuse3 (${errors.join("; ")}). ${LIBFUSE_HINT}`);
}

function libraryName(): string {
  return loadedName ?? envSwitch("BUCKETFS_LIBFUSE") ?? SONAMES[0];
}

function tryOpen<T extends Record<string, { args: readonly FFIType[]; returns: FFIType }>>(symbols: T) {
  try {
    return dlopen(libraryName(), symbols).symbols;
  } catch {
    return undefined;
  }
}

type FuseLib = ReturnType<typeof openFuse>;

let fuseLib: FuseLib | undefined;

/** libfuse3 symbols, loaded on first use. */
export function fuse(): FuseLib["symbols"] {
  fuseLib ??= openFuse();
  return fuseLib.symbols;
}

export interface LibfuseVersion {
  major: number;
  minor: number;
  hotfix: number;
}

/** The loaded libfuse: its version and the optional parts it has. */
export interface Libfuse {
  /** What BUCKETFS_LIBFUSE or the default name resolved to. */
  path: string;
  /** fuse_pkgversion(), e.g. "3.17.4". */
  pkgversion: string;
  version: LibfuseVersion;
  customIo: ReturnType<typeof tryOpen<typeof CUSTOM_IO_SYMBOLS>>;
  v317: ReturnType<typeof tryOpen<typeof V317_SYMBOLS>>;
}

/**
 * "3.17.4" -> {3, 17, 4}. When the string is not numeric, fuse_version(): major * 100 + minor
 * (310, 317) since 3.10 or so, major * 10 + minor before (33).
 */
export function parseLibfuseVersion(pkg: string, fuseVersion: number): LibfuseVersion {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(pkg.trim());
  if (m) return { major: Number(m[1]), minor: Number(m[2]), hotfix: Number(m[3] ?? 0) };
  if (fuseVersion >= 300) return { major: Math.floor(fuseVersion / 100), minor: fuseVersion % 100, hotfix: 0 };
  return { major: 3, minor: fuseVersion - 30, hotfix: 0 };
}

let info: Libfuse | undefined;

/** The library's version and optional symbols, read once (the first call loads libfuse). */
export function libfuse(): Libfuse {
  if (info) return info;
  const s = fuse();
  const pkgversion = String(s.fuse_pkgversion());
  const version = parseLibfuseVersion(pkgversion, s.fuse_version());
  if (version.major !== 3 || version.minor < 3) {
    throw new Error(`${libraryName()} is libfuse ${pkgversion}; bucketfs needs libfuse 3.3 or newer. ${LIBFUSE_HINT}`);
  }
  const at317 = version.minor >= 17;
  info = {
    path: libraryName(),
    pkgversion,
    version,
    customIo: !at317 && version.minor >= 14 ? tryOpen(CUSTOM_IO_SYMBOLS) : undefined,
    v317: at317 ? tryOpen(V317_SYMBOLS) : undefined,
  };
  return info;
}

/** Read a C string argument during a callback (copies it). */
export function readCString(p: Pointer | null): string {
  return p === null || (p as unknown as number) === 0 ? "" : String(new CString(p));
}
