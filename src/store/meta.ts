/**
 * Object times and the metadata convention bucketfs shares with s3fs and rclone:
 * `x-amz-meta-mtime` (seconds since epoch, may be fractional) and `x-amz-meta-mode`
 * (st_mode; s3fs writes it in decimal, e.g. "33188" for 0100644; a leading "0" means octal).
 *
 * The one mtime rule (docs/SEMANTICS.md): an object in the read-only namespace shows its
 * Last-Modified in WHOLE SECONDS, whichever request described it. A listing carries
 * milliseconds, HEAD and GET carry whole seconds and no listing carries user metadata, so
 * this is the only value every kind of request agrees on, on every node. Workflow engines
 * (Nextflow's -resume hashes path, size and mtime in ms) need that. `x-amz-meta-mtime` is
 * applied only where bucketfs restores a file into a workdir (prefetch), which is a local
 * file from then on.
 *
 * Is: that rule, and parsing of those values from an ObjectInfo. Is not: a client;
 * writers format the values where they upload.
 */
import type { ObjectInfo } from "./types.ts";

/** The namespace mtime of an object version (ms, a whole second): Last-Modified truncated. */
export function objectMtimeMs(info: Pick<ObjectInfo, "lastModifiedMs">): number {
  return Math.floor(info.lastModifiedMs / 1000) * 1000;
}

/**
 * The mtime to restore on a local copy, in seconds for utimes(): metadata `mtime` when
 * valid, else objectMtimeMs. A double cannot hold nanoseconds at today's epoch (its step is
 * ~240 ns) and utimes() truncates, so a fractional value is the middle of the metadata's
 * microsecond: the restored file keeps the exact microsecond, hence the exact millisecond
 * Nextflow hashes (measured: a plain Number() lost the millisecond of about half the
 * whole-millisecond mtimes). Whole seconds are exact.
 */
export function storedMtimeS(info: Pick<ObjectInfo, "lastModifiedMs" | "meta">): number {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(info.meta?.mtime?.trim() ?? "");
  const sec = m ? Number(m[1]) : NaN;
  if (m && Number.isSafeInteger(sec) && (sec > 0 || /[1-9]/.test(m[2] ?? ""))) {
    if (!/[1-9]/.test(m[2] ?? "")) return sec; // whole seconds: exact in a double
    const micros = Number(`${m[2] ?? ""}000000`.slice(0, 6));
    return sec + (micros + 0.5) / 1e6;
  }
  return objectMtimeMs(info) / 1000;
}

/** Permission bits (& 0o7777) from metadata `mode`, or null when absent/invalid. */
export function objectMode(info: Pick<ObjectInfo, "meta">): number | null {
  const raw = info.meta?.mode?.trim();
  if (!raw || !/^\d+$/.test(raw)) return null;
  const n = raw.length > 1 && raw.startsWith("0") ? parseInt(raw, 8) : parseInt(raw, 10);
  return Number.isFinite(n) ? n & 0o7777 : null;
}
