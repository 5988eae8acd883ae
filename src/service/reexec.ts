/**
 * Makes sure the process runs with a large enough threadpool before it mounts anything.
 *
 * Each outstanding /dev/fuse read occupies one thread of Bun's pool while the mount is
 * idle, and Bun sizes the pool from UV_THREADPOOL_SIZE only at process start (the spike
 * measured a 2-thread default here, which starves every other async fs call). When the
 * variable is missing we re-exec the same command line with it set, keeping the PID (so
 * systemd's MAINPID and our pid files stay right). Is not: a supervisor.
 */
import { readFileSync } from "node:fs";
import { ptr } from "bun:ffi";
import { cstrArray, lastErrno, libc, strerror } from "../sys/libc.ts";
import { logger } from "../util/log.ts";
import { envSwitch } from "../util/env.ts";

export function ensureThreadpool(size: number): void {
  if (process.env.UV_THREADPOOL_SIZE || envSwitch("BUCKETFS_NO_REEXEC")) return;
  const argv = readFileSync("/proc/self/cmdline", "utf8").split("\0");
  if (argv[argv.length - 1] === "") argv.pop();
  const env = Object.entries({ ...process.env, UV_THREADPOOL_SIZE: String(size) }).map(([k, v]) => `${k}=${v ?? ""}`);
  const a = cstrArray(argv);
  const e = cstrArray(env);
  libc().execve("/proc/self/exe", ptr(a.array), ptr(e.array));
  // Only reached when execve failed: go on with the default pool, loudly.
  logger("daemon").warn(`cannot re-exec with UV_THREADPOOL_SIZE=${size} (${strerror(lastErrno())}); set it in the environment`);
}
