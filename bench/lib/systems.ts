/**
 * The three filesystems the benchmark compares, behind one interface: mount a bucket (fresh,
 * empty cache every time), give the mount's root path and the serving process' pid, stop it
 * the way each one is meant to be stopped, and clean up (kill, lazy unmount, remove its dirs).
 *
 *   bucketfs  the real daemon via test/helpers/daemon.ts (config keys as used in production;
 *             `extra` overrides such as read_ahead=128M come from --bucketfs-opt).
 *             Stop = SIGTERM (uploads the workdir, then exits).
 *   s3fs      Debian's s3fs 1.90 in the foreground (-f) with a passwd file and use_cache.
 *             Stop = `umount`.
 *   rclone    Debian's rclone 1.60 `mount --vfs-cache-mode full`, remote from RCLONE_S3_* env.
 *             Stop = `umount` (rclone then exits; it does NOT wait for pending uploads).
 *
 * The exact flags are in PEER_FLAGS below and printed in the results file. Every process is
 * started under `setpriv --pdeathsig KILL`, and cleanupAllSync() (installed as an exit hook by
 * run.ts) kills and lazily unmounts whatever is still up.
 *
 * Is: mount lifecycle. Is not: measurement.
 */
import { chmodSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { S3Server } from "../../test/helpers/s3server.ts";
import { removeDir, startDaemon, type DaemonHandle } from "../../test/helpers/daemon.ts";
import { isMounted, lazyUnmountUnder, sh, shSync, sleep } from "./util.ts";

export type SystemName = "bucketfs" | "s3fs" | "rclone";
export const SYSTEMS: SystemName[] = ["bucketfs", "s3fs", "rclone"];

export interface Mounted {
  system: SystemName;
  /** Path of the bucket's root inside the mount. */
  root: string;
  /** The process serving the mount (for RSS/CPU sampling). */
  pid: number;
  /** Directory holding this mount's config, cache and logs. */
  dir: string;
  /** True while the serving process has not exited. */
  alive(): boolean;
  /** Stop as intended (bucketfs: SIGTERM; peers: umount) and wait for the process to exit. */
  stop(timeoutMs?: number): Promise<{ ms: number; code: number | null; timedOut: boolean }>;
  /** Kill if still alive, lazily unmount, remove the dir. Idempotent. */
  cleanup(): Promise<void>;
  log(): string;
}

export interface MountOptions {
  /** bucketfs: workdir prefix (writable, uploaded on SIGTERM); peers write anywhere anyway. */
  workdir?: string;
}

/** Flags given to the peers (apart from endpoint and credentials), for the record. */
export const PEER_FLAGS = {
  s3fs: [
    "-f",
    "-o use_path_request_style",
    "-o endpoint=us-east-1",
    "-o use_cache=<fresh dir per mount>",
    "-o parallel_count=8",
    "-o multipart_size=16",
    "-o multireq_max=20",
    "-o stat_cache_expire=300",
    "-o enable_noobj_cache",
    "-o attr_timeout=300,entry_timeout=300",
    "-o dbglevel=warn",
  ],
  rclone: [
    "--vfs-cache-mode full",
    "--cache-dir <fresh dir per mount>",
    "--vfs-read-chunk-size 32M",
    "--vfs-read-chunk-size-limit off",
    "--buffer-size 32M",
    "--vfs-read-ahead 64M",
    "--dir-cache-time 300s",
    "--attr-timeout 300s",
    "--use-server-modtime",
    "--vfs-fast-fingerprint",
    "--transfers 16",
    "--s3-chunk-size 16M",
    "--s3-upload-cutoff 16M",
    "--s3-upload-concurrency 8",
    "--vfs-write-back 5s",
    "--log-level INFO",
  ],
};

const live = new Set<Mounted>();

/** Kill every process we started and lazily unmount its mount (exit hooks; synchronous). */
export function cleanupAllSync(): void {
  for (const m of live) {
    try {
      process.kill(m.pid, "SIGKILL");
    } catch {
      /* gone */
    }
    lazyUnmountUnder(m.dir);
    rmSync(m.dir, { recursive: true, force: true });
  }
  live.clear();
}

export interface SystemsContext {
  server: S3Server;
  /** Parent directory for all mount dirs of this run. */
  workRoot: string;
  /** Extra bucketfs config keys (`--bucketfs-opt key=value`). */
  bucketfsExtra: Record<string, string>;
  /** Environment for the bucketfs daemon (e.g. BUCKETFS_BIN for a profiling wrapper). */
  bucketfsEnv: Record<string, string>;
  /** Where mount dirs (and so every cache) are created instead of workRoot (e.g. a slow disk). */
  dirRoot?: string;
}

export async function mount(ctx: SystemsContext, system: SystemName, bucket: string, opts: MountOptions = {}): Promise<Mounted> {
  switch (system) {
    case "bucketfs":
      return mountBucketfs(ctx, bucket, opts);
    case "s3fs":
      return mountPeer(ctx, "s3fs", bucket);
    case "rclone":
      return mountPeer(ctx, "rclone", bucket);
  }
}

async function mountBucketfs(ctx: SystemsContext, bucket: string, opts: MountOptions): Promise<Mounted> {
  const dir = mkdtempSync(join(ctx.dirRoot ?? ctx.workRoot, "m-bucketfs-"));
  let d: DaemonHandle;
  try {
    d = await startDaemon(
      ctx.server,
      [{ bucket, ...(opts.workdir ? { workdir: `/${bucket}/${opts.workdir}` } : {}), extra: ctx.bucketfsExtra }],
      { dir, env: { BUCKETFS_LOG_LEVEL: "info", ...ctx.bucketfsEnv }, timeoutMs: 120_000 },
    );
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let exited = false;
  void d.proc.exited.then(() => (exited = true));
  const m: Mounted = {
    system: "bucketfs",
    root: d.mnt[bucket] ?? "",
    pid: d.proc.pid,
    dir,
    alive: () => !exited,
    async stop(timeoutMs = 600_000) {
      const t0 = performance.now();
      if (!exited) d.proc.kill("SIGTERM");
      const done = await Promise.race([d.proc.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
      const ms = performance.now() - t0;
      if (!done) return { ms, code: null, timedOut: true };
      return { ms, code: d.proc.exitCode, timedOut: false };
    },
    async cleanup() {
      if (!live.has(m)) return;
      live.delete(m);
      // Graceful first (lets a profiling run write its profile), then the helper's SIGKILL.
      if (!exited) await m.stop(15_000);
      await d.cleanup();
      removeDir(dir);
    },
    log: () => d.log(),
  };
  live.add(m);
  return m;
}

async function mountPeer(ctx: SystemsContext, kind: "s3fs" | "rclone", bucket: string): Promise<Mounted> {
  const dir = mkdtempSync(join(ctx.dirRoot ?? ctx.workRoot, `m-${kind}-`));
  const mnt = join(dir, "mnt");
  const cache = join(dir, "cache");
  mkdirSync(mnt, { recursive: true });
  mkdirSync(cache, { recursive: true });
  const logFile = join(dir, `${kind}.log`);
  const s = ctx.server;
  let cmd: string[];
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" };
  if (kind === "s3fs") {
    const passwd = join(dir, "passwd-s3fs");
    writeFileSync(passwd, `${s.accessKey}:${s.secretKey}\n`);
    chmodSync(passwd, 0o600);
    cmd = [
      "s3fs", bucket, mnt, "-f",
      "-o", `url=${s.endpoint}`,
      "-o", "use_path_request_style",
      "-o", `endpoint=${s.region}`,
      "-o", `passwd_file=${passwd}`,
      "-o", `use_cache=${cache}`,
      "-o", "parallel_count=8",
      "-o", "multipart_size=16",
      "-o", "multireq_max=20",
      "-o", "stat_cache_expire=300",
      "-o", "enable_noobj_cache",
      "-o", "attr_timeout=300,entry_timeout=300",
      "-o", "dbglevel=warn",
    ];
  } else {
    Object.assign(env, {
      RCLONE_S3_PROVIDER: "Minio",
      RCLONE_S3_ENDPOINT: s.endpoint,
      RCLONE_S3_ACCESS_KEY_ID: s.accessKey,
      RCLONE_S3_SECRET_ACCESS_KEY: s.secretKey,
      RCLONE_S3_REGION: s.region,
      RCLONE_S3_FORCE_PATH_STYLE: "true",
    });
    cmd = [
      "rclone", "mount", `:s3:${bucket}`, mnt,
      "--config", "/dev/null",
      "--cache-dir", cache,
      "--vfs-cache-mode", "full",
      "--vfs-read-chunk-size", "32M",
      "--vfs-read-chunk-size-limit", "off",
      "--buffer-size", "32M",
      "--vfs-read-ahead", "64M",
      "--dir-cache-time", "300s",
      "--attr-timeout", "300s",
      "--use-server-modtime",
      "--vfs-fast-fingerprint",
      "--transfers", "16",
      "--s3-chunk-size", "16M",
      "--s3-upload-cutoff", "16M",
      "--s3-upload-concurrency", "8",
      "--vfs-write-back", "5s",
      "--log-level", "INFO",
    ];
  }
  const fd = openSync(logFile, "a");
  let proc: Subprocess;
  try {
    // AWS_CA_BUNDLE is not passed on (rclone 1.60 fails with it set; see peers.md).
    proc = Bun.spawn({ cmd: ["setpriv", "--pdeathsig", "KILL", "--", ...cmd], env, stdin: "ignore", stdout: fd, stderr: fd, cwd: dir });
  } finally {
    closeSync(fd);
  }
  let exited = false;
  void proc.exited.then(() => (exited = true));
  const fstype = kind === "s3fs" ? "fuse.s3fs" : "fuse.rclone";
  const log = (): string => {
    try {
      return readFileSync(logFile, "utf8");
    } catch {
      return "";
    }
  };
  const m: Mounted = {
    system: kind,
    root: mnt,
    pid: proc.pid,
    dir,
    alive: () => !exited,
    async stop(timeoutMs = 600_000) {
      const t0 = performance.now();
      if (isMounted(mnt)) {
        const u = await sh(`umount '${mnt}'`, { allowFail: true, timeoutS: Math.ceil(timeoutMs / 1000) });
        if (u.code !== 0) console.log(`  note: umount ${kind} failed (${u.err.trim()}); sending SIGTERM`);
        if (u.code !== 0 && !exited) proc.kill("SIGTERM");
      } else if (!exited) {
        proc.kill("SIGTERM");
      }
      const done = await Promise.race([proc.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
      const ms = performance.now() - t0;
      return { ms, code: done ? proc.exitCode : null, timedOut: !done };
    },
    async cleanup() {
      if (!live.has(m)) return;
      live.delete(m);
      if (!exited) await m.stop(10_000);
      if (!exited) {
        proc.kill("SIGKILL");
        await Promise.race([proc.exited, sleep(5000)]);
      }
      lazyUnmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    },
    log,
  };
  live.add(m);
  // Ready = the mount is in the table and answers a stat of its root.
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) {
      await m.cleanup();
      throw new Error(`${kind} exited before mounting:\n${log().slice(-3000)}`);
    }
    if (isMounted(mnt, fstype)) {
      const st = await sh(`stat -c %i '${mnt}'`, { allowFail: true, timeoutS: 30 });
      if (st.code === 0) return m;
    }
    if (Date.now() > deadline) {
      await m.cleanup();
      throw new Error(`${kind} did not mount within 60 s:\n${log().slice(-3000)}`);
    }
    await sleep(50);
  }
}

/** `s3fs --version` / `rclone version` first lines. */
export function peerVersions(): Record<string, string> {
  const first = (cmd: string): string => shSync(cmd).out.split("\n")[0]?.trim() ?? "?";
  return {
    s3fs: first("s3fs --version 2>&1 | head -1"),
    rclone: first("rclone version 2>&1"),
  };
}

/** Removes a mount dir that may still be mounted (never while a process serves it). */
export function forceRemove(dir: string): void {
  lazyUnmountUnder(dir);
  shSync(`rm -rf '${dir}'`);
}
