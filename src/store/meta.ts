/**
 * The object metadata convention bucketfs shares with s3fs and rclone: `x-amz-meta-mtime`
 * (seconds since epoch, may be fractional) and `x-amz-meta-mode` (st_mode; s3fs writes it
 * in decimal, e.g. "33188" for 0100644; a leading "0" means octal).
 *
 * Is: parsing of those values from an ObjectInfo. Is not: a client; writers format the
 * values where they upload.
 */
import type { ObjectInfo } from "./types.ts";

/** mtime in ms: metadata `mtime` when valid, else Last-Modified. */
export function objectMtimeMs(info: Pick<ObjectInfo, "lastModifiedMs" | "meta">): number {
  const raw = info.meta?.mtime;
  if (raw !== undefined && /^\d+(\.\d+)?$/.test(raw.trim())) {
    const ms = Number(raw.trim()) * 1000;
    if (Number.isFinite(ms) && ms > 0) return ms;
  }
  return info.lastModifiedMs;
}

/** Permission bits (& 0o7777) from metadata `mode`, or null when absent/invalid. */
export function objectMode(info: Pick<ObjectInfo, "meta">): number | null {
  const raw = info.meta?.mode?.trim();
  if (!raw || !/^\d+$/.test(raw)) return null;
  const n = raw.length > 1 && raw.startsWith("0") ? parseInt(raw, 8) : parseInt(raw, 10);
  return Number.isFinite(n) ? n & 0o7777 : null;
}
