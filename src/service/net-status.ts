/**
 * The daemon's view of the wire, published as a small JSON file beside the bucket's index:
 * `<cachepath>/.<bucket>.net.json` (GETs and bytes in flight against their process-wide
 * limits, the clock offset measured from S3's Date headers, throttled retries and timeouts,
 * the proxy in use, the credentials' expiry and a failed refresh).
 *
 * Is: the writer (rewritten atomically at most every 500 ms while it changes, and once when
 * the process exits, so a start that failed on a skewed clock still shows it) and the reader
 * `bucketfs status` (`--json` and the one-line summary) uses. Is not: the measuring (store/s3/request.ts, credentials.ts).
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import type { BucketConfig } from "../config/types.ts";
import { storeNetworkStatus, type StoreNetworkStatus } from "../store/s3.ts";
import { fmtBytes } from "../util/log.ts";

export type NetStatus = StoreNetworkStatus & { pid: number; writtenAtMs: number };

export function netStatusPath(cfg: Pick<BucketConfig, "cachePath" | "bucket">): string {
  return `${cfg.cachePath}/.${cfg.bucket}.net.json`;
}

/** Keep the file up to date; the returned function writes a last copy and stops. */
export function publishNetStatus(cfg: Pick<BucketConfig, "cachePath" | "bucket">, everyMs = 500): () => void {
  const path = netStatusPath(cfg);
  let last = "";
  const write = () => {
    const now = JSON.stringify(storeNetworkStatus(cfg.bucket));
    if (now === last) return;
    last = now;
    const out: NetStatus = { ...(JSON.parse(now) as StoreNetworkStatus), pid: process.pid, writtenAtMs: Date.now() };
    try {
      writeFileSync(`${path}.tmp`, JSON.stringify(out, null, 1) + "\n", { mode: 0o644 });
      renameSync(`${path}.tmp`, path);
    } catch {
      last = ""; // the cache directory is full or gone: try again next tick
    }
  };
  write();
  const t = setInterval(write, everyMs);
  t.unref();
  process.on("exit", write);
  return () => {
    clearInterval(t);
    process.off("exit", write);
    write();
  };
}

/** What the last daemon for `cfg` published (null when it never did). */
export function netStatus(cfg: Pick<BucketConfig, "cachePath" | "bucket">): NetStatus | null {
  try {
    return JSON.parse(readFileSync(netStatusPath(cfg), "utf8")) as NetStatus;
  } catch {
    return null;
  }
}

/** One line for `bucketfs status`. */
export function netLine(n: NetStatus): string {
  const skew = n.clockSkewMs !== null && Math.abs(n.clockSkewMs) >= 60_000 ? `, clock off by ${Math.round(n.clockSkewMs / 60_000)} min` : "";
  const creds = n.credentials.refreshError ? `, credential refresh failing: ${n.credentials.refreshError}` : "";
  return `network: ${n.gets.inFlight}/${n.gets.limit} GETs (${fmtBytes(n.gets.bytesInFlight)}/${fmtBytes(n.gets.bytesLimit)}), ` +
    `${n.throttled} throttled retries, ${n.timeouts} timeouts${n.proxy ? `, proxy ${n.proxy}` : ""}${skew}${creds}`;
}
