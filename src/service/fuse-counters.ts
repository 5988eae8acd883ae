/**
 * The daemon's FUSE request counters, published as a small JSON file beside the bucket's
 * index: `<cachepath>/.<bucket>.fuse.json`.
 *
 * Is: the writer (rewritten atomically at most every 500 ms while the counters change, and
 * once at unmount) and the reader `bucketfs status` and the tests use to learn which path
 * served a read (READ requests by size, passthrough opens). Is not: the counting itself
 * (fuse/session.ts) or any control channel into the daemon.
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import type { BucketConfig } from "../config/types.ts";
import type { FuseCounters } from "../fuse/session.ts";
import { fmtBytes } from "../util/log.ts";

export type PublishedCounters = FuseCounters & { pid: number; writtenAtMs: number };

export function fuseCountersPath(cfg: Pick<BucketConfig, "cachePath" | "bucket">): string {
  return `${cfg.cachePath}/.${cfg.bucket}.fuse.json`;
}

/**
 * Keep `path` up to date with `read()`; the returned function writes a last copy and stops.
 * Writes are asynchronous (a busy cache disk never stalls the loop that serves FUSE) and at
 * most one is in flight.
 */
export function publishFuseCounters(
  path: string, read: () => FuseCounters, version: () => number, everyMs = 500,
): () => void {
  let last = "";
  let lastVersion = -1;
  let writing = false;
  const body = (): string | undefined => {
    const v = version();
    if (v === lastVersion) return undefined; // nothing counted since the last write
    lastVersion = v;
    const b = JSON.stringify(read());
    if (b === last) return undefined;
    last = b;
    const out: PublishedCounters = { ...(JSON.parse(b) as FuseCounters), pid: process.pid, writtenAtMs: Date.now() };
    return JSON.stringify(out, null, 1) + "\n";
  };
  const tick = () => {
    if (writing) return;
    const text = body();
    if (text === undefined) return;
    writing = true;
    writeFile(`${path}.tmp`, text, { mode: 0o644 })
      .then(() => rename(`${path}.tmp`, path))
      .catch(() => {
        last = ""; // try again next tick (cache directory full or gone)
        lastVersion = -1;
      })
      .finally(() => (writing = false));
  };
  tick();
  const t = setInterval(tick, everyMs);
  t.unref();
  return () => {
    clearInterval(t);
    const text = body();
    if (text === undefined) return;
    try {
      writeFileSync(`${path}.tmp`, text, { mode: 0o644 });
      renameSync(`${path}.tmp`, path);
    } catch {
      /* the counters are a debugging aid */
    }
  };
}

export function readFuseCounters(path: string): PublishedCounters | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as PublishedCounters;
  } catch {
    return undefined;
  }
}

export type FuseStatus = PublishedCounters;

/** The counters of the daemon `pid` serving `cfg` (null when its file is missing or from another process). */
export function fuseStatus(cfg: Pick<BucketConfig, "cachePath" | "bucket">, pid: number): FuseStatus | null {
  const c = readFuseCounters(fuseCountersPath(cfg));
  return c && c.pid === pid ? c : null;
}

/** One line for `bucketfs status`. */
export function fuseLine(c: FuseStatus): string {
  const pt = c.passthrough;
  const state = pt.state === "on" ? `on (${pt.opens} opens)` : `${pt.state}${pt.reason ? ` (${pt.reason})` : ""}`;
  const lib = c.libfuse ? ` (libfuse ${c.libfuse.version})` : ""; // absent in files of older daemons
  return `fuse${lib}: ${c.requests["READ"] ?? 0} READs (largest ${fmtBytes(c.maxReadSize)}), passthrough ${state}`;
}
