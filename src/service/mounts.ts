/**
 * Mount-table chores around the FUSE sessions: pid files, stale mounts from a killed run,
 * bind mounts of the workdir, and finding processes that keep a mount busy.
 *
 * Is: small functions with clear errors. Bind mounts and their unmounts run in a child
 * process (`mount`/`umount` from util-linux) because resolving a path inside our own FUSE
 * mount from the JS thread would deadlock: that thread is the one that answers LOOKUPs.
 * Is not: the lifecycle order (daemon.ts).
 */
import { closeSync, constants, fstatSync, openSync, ftruncateSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeSync } from "node:fs";
import { readFileNoFollow, writeFileNoFollow } from "../cache/cache-root.ts";
import { EWOULDBLOCK, libc, lastErrno, LOCK_EX, LOCK_NB, MNT_DETACH, strerror } from "../sys/libc.ts";
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

/** Pid files this process holds, with the fd that keeps their lock. */
const heldPidFiles = new Map<string, number>();

/**
 * Write our pid file (0600, never through a symlink) under an exclusive flock held until
 * `releasePidFile` or exit; refuse when another live bucketfs holds it. The lock makes two
 * daemons started at the same moment on one cache a clean refusal naming the other, instead of
 * a race that one loses inside the index ("database is locked").
 */
export function claimPidFile(pidFile: string, bucket: string): void {
  const refuse = (other: number | undefined, starting: boolean): Error =>
    new Error(
      `bucket ${bucket} is already served by ${other !== undefined ? `bucketfs pid ${other}` : "another bucketfs"}` +
        `${starting ? " that is starting at this moment" : ""} on the same cache (${pidFile}); stop it first, or give this one another cachepath`,
    );
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = openSync(pidFile, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ELOOP") {
        throw new Error(`${pidFile} is a symlink; bucketfs never follows symlinks in its cache. Fix: remove it (rm ${pidFile})`);
      }
      throw err;
    }
    if (!fstatSync(fd).isFile()) {
      closeSync(fd);
      throw new Error(`${pidFile} is not a regular file; remove it`);
    }
    if (libc().flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      const errno = lastErrno();
      closeSync(fd);
      if (errno === EWOULDBLOCK) throw refuse(livePid(pidFile), true);
      // No locks here (an odd filesystem): the pid check alone, as before the lock.
      const other = livePid(pidFile);
      if (other !== undefined) throw refuse(other, false);
      writeFileNoFollow(pidFile, `${process.pid}\n`, 0o600);
      return;
    }
    // Locked, but the file may have been removed (a daemon stopping) after we opened it: retry.
    const path = lstatSync(pidFile, { throwIfNoEntry: false });
    if (path === undefined || path.ino !== fstatSync(fd).ino) {
      closeSync(fd);
      if (attempt < 3) continue;
      throw new Error(`cannot claim ${pidFile}: it keeps being replaced`);
    }
    const other = livePid(pidFile); // a bucketfs without the lock (older version)
    if (other !== undefined) {
      closeSync(fd);
      throw refuse(other, false);
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
    heldPidFiles.set(pidFile, fd);
    return;
  }
}

export function releasePidFile(pidFile: string): void {
  if (readFileNoFollow(pidFile)?.trim() === String(process.pid)) rmSync(pidFile, { force: true });
  const fd = heldPidFiles.get(pidFile);
  if (fd !== undefined) {
    heldPidFiles.delete(pidFile);
    closeSync(fd); // after the removal: a starter that locks the old inode sees it gone and retries
  }
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
