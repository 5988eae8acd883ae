/**
 * `bucketfs status --json` for tests: what a daemon's runs table says (phase, pending files,
 * runs), read through the real CLI as a separate process.
 *
 * Is: running the CLI and polling it until a condition holds. Is not: a log parser; tests
 * learn the daemon's state here instead of from log lines.
 */
import { bucketfsCommand } from "./daemon.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

export interface RunJson {
  id: number;
  kind: "daemon" | "prefetch" | "recovery" | "sync" | "upload";
  scope: string;
  daemonRun: number | null;
  phase: string | null;
  pid: number | null;
  startedMs: number;
  finishedMs: number | null;
  outcome: string;
  files: number;
  bytes: number;
  failed: number;
  message?: string;
  exitCode: number | null;
  cacheSynced: boolean;
}

export interface BucketJson {
  bucket: string;
  pid: number | null;
  mount: string | { occupiedBy: string };
  phase: string | null;
  daemonRun: RunJson | null;
  workdir: null | {
    pending: { path: string; size: number }[];
    pendingBytes: number;
    failures: { path: string; attempts: number; lastError: string }[];
    problems: { path: string; error: string }[];
    /** Keys the last prefetch could not read (listed, then 404 twice). */
    unreadable: { key: string; etag: string; error: string }[];
    /** Files the last upload could not give S3 under their names. */
    unuploadable: { path: string; reason: string }[];
    /** The last upload run, file by file (src/service/workdir/upload.ts LastUpload). */
    lastUpload: null | {
      kind: string; ok: boolean; uploaded: number; unchanged: number; order: string[]; failed: { path: string; error: string }[];
      unuploadable: { path: string; reason: string }[]; markersUploaded: string[]; markersHeldBack: string[];
      skipped: { path: string; kind: string }[]; aborted: boolean; fenced: string | null; record: string | null;
    };
    /** The last successful prefetch (src/service/workdir/prefetch.ts LastPrefetch). */
    lastPrefetch: null | {
      remoteFiles: number; toDownload: number; downloaded: number; upToDate: number; keptLocal: string[];
      skipped: { key: string; reason: string }[]; skippedDeleted: string[]; restoredSymlinks: number; restoredDirs: number;
    };
    lease: null | {
      runId: string;
      lastRecord: number | null;
      updatedMs: number;
      lease: {
        state: string; how?: string; conditionalWrites: boolean | null; renewFailures: number; lastError?: string; takenBy?: string; expiresMs?: number;
        /** Renewals answered 412 whose lease still named this run (adopted). */
        adopted?: number;
        /** Ms this node may still write by its clock (<= 0: fenced), as last saved. */
        fenceLeftMs?: number;
      };
    };
  };
  runs: RunJson[];
  /** The read cache: objects fetched by what checked them (`none`: unverified), over every run. */
  readCache: null | { checks: Record<string, number>; unverified: number; keptObjects: number; keptBytes: number };
  /** The live daemon's FUSE request counters (by opcode name). */
  fuse: null | { requests: Record<string, number> };
  /** The wire as the last daemon published it (service/net-status.ts). */
  network: null | {
    pid: number;
    gets: { inFlight: number; waiting: number; limit: number; bytesInFlight: number; bytesLimit: number };
    clockSkewMs: number | null;
    throttled: number;
    timeouts: number;
    proxy: string | null;
    credentials: { kind: string; expiresAtMs: number | null; fetches: number; refreshError: string | null };
  };
  error?: string;
}

/** `bucketfs status --json --config FILE`, parsed; throws when the command fails. */
export async function statusJson(configPath: string): Promise<BucketJson[]> {
  const p = Bun.spawn([...bucketfsCommand(), "status", "--json", "--config", configPath], {
    cwd: REPO, stdout: "pipe", stderr: "pipe", stdin: "ignore",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`bucketfs status --json exited ${code}: ${err}`);
  return (JSON.parse(out) as { buckets: BucketJson[] }).buckets;
}

/** Poll `status --json` until `pred` holds for the bucket; returns that status. */
export async function waitStatus(
  configPath: string, bucket: string, pred: (b: BucketJson) => boolean, what: string, timeoutMs = 60_000,
): Promise<BucketJson> {
  const deadline = Date.now() + timeoutMs;
  let last: BucketJson | undefined;
  for (;;) {
    last = (await statusJson(configPath)).find((b) => b.bucket === bucket);
    if (last && pred(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last status: ${JSON.stringify(last)}`);
    await Bun.sleep(100);
  }
}

/** The transfer runs a daemon run made (oldest first). */
export function runsOf(b: BucketJson, daemonRun: number): RunJson[] {
  return b.runs.filter((r) => r.daemonRun === daemonRun).reverse();
}
