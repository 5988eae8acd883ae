/**
 * Mount-table chores around the FUSE sessions: pid files, stale mounts from a killed run,
 * bind mounts of the workdir, and finding processes that keep a mount busy.
 *
 * Is: small functions with clear errors. Bind mounts and their unmounts run in a child
 * process (`mount`/`umount` from util-linux) because resolving a path inside our own FUSE
 * mount from the JS thread would deadlock: that thread is the one that answers LOOKUPs.
 * Is not: the lifecycle order (daemon.ts).
 */
import { mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { readFileNoFollow, writeFileNoFollow } from "../cache/cache-root.ts";
import { libc, lastErrno, MNT_DETACH, strerror } from "../sys/libc.ts";
import { mountAt, readMounts } from "../util/mountinfo.ts";
import type { Logger } from "../util/log.ts";

export const FSTYPE = "fuse.bucketfs";

/** PID of a live process recorded in `pidFile` that looks like bucketfs, or undefined. */
export function livePid(pidFile: string): number | undefined {
  const text = readFileNoFollow(pidFile);
  if (text === undefined) return undefined;
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return undefined;
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return /bucketfs|cli\/main/.test(cmd) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Write our pid file (0600, never through a symlink); refuse when another live bucketfs owns it. */
export function claimPidFile(pidFile: string, bucket: string): void {
  const other = livePid(pidFile);
  if (other !== undefined) {
    throw new Error(`bucket ${bucket} is already served by bucketfs pid ${other} (${pidFile}); stop it first`);
  }
  writeFileNoFollow(pidFile, `${process.pid}\n`, 0o600);
}

export function releasePidFile(pidFile: string): void {
  if (readFileNoFollow(pidFile)?.trim() === String(process.pid)) rmSync(pidFile, { force: true });
}

/**
 * Make `mountpoint` usable: detach a stale bucketfs mount left by a killed run (it answers
 * "Transport endpoint is not connected"), refuse a mount that belongs to anything else,
 * and create the directory.
 */
export function prepareMountpoint(mountpoint: string, log: Logger): void {
  for (let i = 0; i < 8; i++) {
    const m = mountAt(mountpoint);
    if (!m) break;
    if (m.fstype !== FSTYPE) {
      throw new Error(`${mountpoint} is already a mount point (${m.fstype} from ${m.source}); choose another mountpoint`);
    }
    log.warn(`cleaning stale mount at ${mountpoint} (left by an earlier run)`);
    if (libc().umount2(mountpoint, MNT_DETACH) !== 0) {
      throw new Error(`cannot unmount stale ${mountpoint}: ${strerror(lastErrno())}`);
    }
  }
  mkdirSync(mountpoint, { recursive: true });
}

async function run(cmd: string[], timeoutMs: number): Promise<{ code: number; err: string }> {
  const p = Bun.spawn(cmd, { stdout: "ignore", stderr: "pipe", stdin: "ignore" });
  const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  clearTimeout(timer);
  return { code, err: err.trim() };
}

/** Bind-mount `source` onto `target` (a directory inside our own FUSE mount). */
export async function bindMount(source: string, target: string): Promise<void> {
  const r = await run(["mount", "--bind", source, target], 30_000);
  if (r.code !== 0) throw new Error(`bind mount ${source} -> ${target} failed: ${r.err || `exit ${r.code}`}`);
}

/** Unmount a bind mount; lazily (detach) when it is busy. Returns false if it stayed mounted. */
export async function unbind(target: string, log: Logger): Promise<boolean> {
  if (!readMounts().some((m) => m.mountpoint === target)) return true;
  const r = await run(["umount", target], 30_000);
  if (r.code === 0) return true;
  log.warn(`${target} is busy (${r.err}); detaching it lazily`);
  const lazy = await run(["umount", "-l", target], 30_000);
  if (lazy.code !== 0) log.error(`cannot detach ${target}: ${lazy.err}`);
  return lazy.code === 0;
}

/** Processes whose cwd, root or open files are at or below `dir` ("1234 (bash)"). */
export function busyProcesses(dir: string): string[] {
  const out: string[] = [];
  const inside = (p: string) => p === dir || p.startsWith(dir + "/");
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const links = [`/proc/${pid}/cwd`, `/proc/${pid}/root`];
      try {
        for (const fd of readdirSync(`/proc/${pid}/fd`)) links.push(`/proc/${pid}/fd/${fd}`);
      } catch {
        /* no access */
      }
      if (links.some((l) => {
        try {
          return inside(readlinkSync(l));
        } catch {
          return false;
        }
      })) {
        const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
        out.push(`${pid} (${comm})`);
      }
    } catch {
      /* process went away */
    }
  }
  return out;
}
