/**
 * Errors of the filesystem layer and THE mapping from any error to an errno.
 *
 * Is: `FsError` (carries its errno) and `toErrno(err)`, the single place where store,
 * cache and unexpected errors become the number the kernel sees. Is not: logging policy
 * (the FUSE adapter logs unexpected errors once, with the op name).
 */
import { constants } from "node:os";
import { StoreError } from "../store/types.ts";

export const E = constants.errno as Record<string, number> & {
  ENOENT: number; EIO: number; EROFS: number; EACCES: number; ENOTDIR: number; EISDIR: number; EINVAL: number;
  ENOSYS: number; EAGAIN: number; ENOSPC: number; ESTALE: number; ENAMETOOLONG: number; EBADF: number;
  ETIMEDOUT: number; EINTR: number; ENODATA: number; ERANGE: number; EPERM: number; ENOTEMPTY: number; EXDEV: number;
};

export class FsError extends Error {
  readonly errno: number;
  constructor(errno: number, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = "FsError";
    this.errno = errno;
  }
}

/** Errors worth a log line at the adapter boundary (anything not an expected FsError). */
export function isExpected(err: unknown): boolean {
  return (
    err instanceof FsError &&
    (err.errno === E.ENOENT || err.errno === E.EROFS || err.errno === E.ENOTDIR || err.errno === E.ENAMETOOLONG ||
      err.errno === E.ENODATA || err.errno === E.ENOSYS)
  );
}

/** The errno for any thrown value. Unknown errors are EIO. */
export function toErrno(err: unknown): number {
  if (err instanceof FsError) return err.errno;
  if (err instanceof StoreError) {
    switch (err.kind) {
      case "not-found":
        return E.ENOENT;
      case "access-denied":
      case "no-such-bucket":
        return E.EACCES;
      case "precondition":
        return E.ESTALE;
      case "aborted":
        return E.EINTR;
      default:
        return E.EIO;
    }
  }
  // Node-style system errors from the local cache (ENOSPC, EACCES, ...)
  if (err && typeof err === "object" && "code" in err && typeof err.code === "string") {
    const n = E[err.code];
    if (typeof n === "number") return n;
  }
  return E.EIO;
}
