/**
 * Runs the real bucketfs daemon for integration tests: writes a config for a test S3
 * server, starts `bun src/cli/main.ts` (or the compiled binary named by BUCKETFS_BIN) as a
 * child process, waits until its mounts answer, and stops it with a signal.
 *
 * Is: process and mount hygiene for tests. Every daemon started here is killed, and every
 * mount under its mountpoints lazily unmounted, in `stop()`/`cleanup()` and at process exit,
 * also when a test fails. Is not: an assertion library.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync, chmodSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { S3Server } from "./s3server.ts";
import { TEST_ROOT } from "./s3server.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

export interface BucketSpec {
  bucket: string;
  /** Workdir as written in the config, e.g. `/b/workdir`; omit for read-only. */
  workdir?: string;
  lastuploadfile?: string;
  /** Extra `key = value` lines. */
  extra?: Record<string, string>;
  /** No keys in the config: the AWS default chain (env, profiles, credential_process) signs. */
  defaultChain?: boolean;
}

export interface DaemonHandle {
  dir: string;
  configPath: string;
  cachePath: string;
  /** Mountpoint of each bucket, by bucket name. */
  mnt: Record<string, string>;
  logFile: string;
  proc: ReturnType<typeof Bun.spawn>;
  log(): string;
  /** Send a signal and wait for exit; returns the exit code (SIGKILL gives null -> -9). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number>;
  /** Kill (if alive) and lazily unmount everything; idempotent. */
  cleanup(): Promise<void>;
}

const live = new Set<DaemonHandle>();
let hooked = false;

function lazyUnmountUnder(dir: string): void {
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .map((p) => p.replace(/\\040/g, " "))
    .filter((p) => p === dir || p.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
  for (const p of mounts) spawnSync("umount", ["-l", p]);
}

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on("exit", () => {
    for (const d of live) {
      try {
        d.proc.kill("SIGKILL");
      } catch {
        /* gone */
      }
      lazyUnmountUnder(d.dir);
    }
  });
}

export function configText(server: S3Server, dir: string, buckets: BucketSpec[]): string {
  return buckets
    .map((b) =>
      [
        `[${b.bucket}]`,
        `bucket = ${b.bucket}`,
        ...(b.defaultChain ? [] : [`aws_access_key_id = ${server.accessKey}`, `aws_secret_access_key = ${server.secretKey}`]),
        `region = ${server.region}`,
        `endpoint = ${server.endpoint}`,
        `mountpoint = ${dir}/mnt/${b.bucket}`,
        `cachepath = ${dir}/cache`,
        ...(b.workdir ? [`workdir = ${b.workdir}`] : []),
        ...(b.lastuploadfile ? [`lastuploadfile = ${b.lastuploadfile}`] : []),
        ...Object.entries(b.extra ?? {}).map(([k, v]) => `${k} = ${v}`),
      ].join("\n"),
    )
    .join("\n\n");
}

/** A fresh directory for one daemon (config, cache, mountpoints). */
export function daemonDir(name: string): string {
  const dir = `${TEST_ROOT}/d-${name}-${randomBytes(4).toString("hex")}`;
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function bucketfsCommand(): string[] {
  const bin = process.env.BUCKETFS_BIN;
  return bin ? [bin] : [process.execPath, `${REPO}/src/cli/main.ts`];
}

/**
 * Start the daemon. Resolves once every bucket's mountpoint is a fuse.bucketfs mount and
 * the log says "ready"; rejects (after cleaning up) if the process exits first or the
 * deadline passes. `dir` may be reused to restart over the same cache.
 */
export async function startDaemon(
  server: S3Server,
  buckets: BucketSpec[],
  opts: { dir?: string; env?: Record<string, string>; timeoutMs?: number; expectFailure?: boolean; args?: string[]; noWait?: boolean } = {},
): Promise<DaemonHandle> {
  hook();
  const dir = opts.dir ?? daemonDir(buckets[0]?.bucket ?? "x");
  const configPath = `${dir}/bucketfs.conf`;
  writeFileSync(configPath, configText(server, dir, buckets) + "\n");
  chmodSync(configPath, 0o600);
  const logFile = `${dir}/daemon-${Date.now()}.log`;
  const mnt: Record<string, string> = {};
  for (const b of buckets) mnt[b.bucket] = `${dir}/mnt/${b.bucket}`;
  const proc = Bun.spawn([...bucketfsCommand(), "--config", configPath, ...(opts.args ?? [])], {
    stdout: Bun.file(logFile),
    stderr: Bun.file(logFile),
    stdin: "ignore",
    env: { ...process.env, BUCKETFS_LOG_LEVEL: "debug", ...opts.env },
  });
  let exited: number | null = null;
  void proc.exited.then((c) => (exited = c));
  const handle: DaemonHandle = {
    dir, configPath, cachePath: `${dir}/cache`, mnt, logFile, proc,
    log: () => (existsSync(logFile) ? readFileSync(logFile, "utf8") : ""),
    async stop(signal = "SIGTERM", timeoutMs = 120_000) {
      if (exited === null) proc.kill(signal);
      const code = await Promise.race([proc.exited, Bun.sleep(timeoutMs).then(() => "timeout" as const)]);
      if (code === "timeout") {
        await handle.cleanup();
        throw new Error(`bucketfs did not exit within ${timeoutMs} ms after ${signal}\n${handle.log()}`);
      }
      live.delete(handle);
      lazyUnmountUnder(dir);
      return proc.signalCode === "SIGKILL" ? -9 : code;
    },
    async cleanup() {
      if (exited === null) {
        proc.kill("SIGKILL");
        await proc.exited;
      }
      lazyUnmountUnder(dir);
      live.delete(handle);
    },
  };
  live.add(handle);
  if (opts.noWait) return handle; // the caller waits (e.g. on `status --json`)
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  for (;;) {
    if (/\bready: /.test(handle.log())) return handle;
    if (exited !== null) {
      if (opts.expectFailure) return handle;
      await handle.cleanup();
      throw new Error(`bucketfs exited with ${exited} before it was ready:\n${handle.log()}`);
    }
    if (Date.now() > deadline) {
      await handle.cleanup();
      throw new Error(`bucketfs not ready after ${opts.timeoutMs ?? 60_000} ms:\n${handle.log()}`);
    }
    await Bun.sleep(50);
  }
}

/** Remove a daemon dir after its daemon is stopped (never while mounted). */
export function removeDir(dir: string): void {
  lazyUnmountUnder(dir);
  rmSync(dir, { recursive: true, force: true });
}

/** Run a shell command (as a separate process: never touch a mount from the test's own thread pool blindly). */
export function sh(cmd: string, timeoutMs = 60_000): { code: number; out: string; err: string } {
  const r = spawnSync("bash", ["-c", cmd], { encoding: "utf8", timeout: timeoutMs });
  return { code: r.status ?? -1, out: r.stdout ?? "", err: r.stderr ?? "" };
}
