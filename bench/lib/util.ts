/**
 * Small helpers shared by the benchmark suite (bench/run.ts): running shell commands as
 * child processes with wall-clock timing, dropping the page cache, medians, repetition
 * with the "3 times if it takes < 20 s" rule, and /proc sampling (peak RSS, CPU time).
 *
 * Is: measurement plumbing. Is not: bucketfs code or a test helper.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";

export const MiB = 1024 * 1024;

export interface ShResult {
  code: number;
  out: string;
  err: string;
  /** Wall time from spawn to exit, in ms. */
  ms: number;
}

/** Runs `cmd` with bash in a child process; throws on a non-zero exit unless `allowFail`. */
export async function sh(
  cmd: string,
  opts: { timeoutS?: number; allowFail?: boolean; env?: Record<string, string> } = {},
): Promise<ShResult> {
  const timeoutS = opts.timeoutS ?? 900;
  const t0 = performance.now();
  const p = Bun.spawn(["timeout", "-k", "5", String(timeoutS), "bash", "-c", cmd], {
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    env: { ...process.env, LC_ALL: "C", ...opts.env },
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const ms = performance.now() - t0;
  if (code !== 0 && !opts.allowFail) {
    throw new Error(`command failed (exit ${code}${code === 124 ? ", timed out" : ""}): ${cmd}\n${err.slice(-2000)}`);
  }
  return { code, out, err, ms };
}

/** Synchronous variant for cleanup paths (exit hooks). Never throws. */
export function shSync(cmd: string, timeoutMs = 30_000): { code: number; out: string } {
  try {
    const r = Bun.spawnSync(["bash", "-c", cmd], { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
    return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
  } catch (e) {
    return { code: -1, out: String(e) };
  }
}

/**
 * Free page reporting (virtio-balloon, Linux's page_reporting module) hands free guest memory
 * back to the VM's host; the guest's next touch of each such page then costs a fault in the
 * host, charged to whatever process touches it first. A bench that drops the page cache frees
 * gigabytes, and every cold read after it pays that tax on each fresh page (the daemon's copy of
 * READ replies into the FUSE page cache, MinIO's buffers): measured 2026-12-07 on this 2-core
 * Firecracker VM, the cold 1 GiB read at 100 ms RTT went from 122-208 to 234-255 MiB/s with
 * reporting paused, and MinIO's CPU per GiB served from 2.0 to 0.8 s. A real node's page cache
 * costs nothing like it, so the benches pause reporting for their run (page_reporting_order
 * above the largest order: no free block qualifies) and restore it at exit.
 * BENCH_KEEP_PAGE_REPORTING=1 leaves it alone.
 */
const REPORTING_ORDER = "/sys/module/page_reporting/parameters/page_reporting_order";
let reportingNote: string | undefined;
let reportingTried = false;
export function pauseFreePageReporting(): string | undefined {
  if (reportingTried) return reportingNote;
  reportingTried = true;
  if (process.env.BENCH_KEEP_PAGE_REPORTING === "1" || !existsSync(REPORTING_ORDER)) return undefined;
  let before: string;
  try {
    before = readFileSync(REPORTING_ORDER, "utf8").trim();
    // The largest buddy order is the last column count of /proc/buddyinfo minus one.
    const cols = readFileSync("/proc/buddyinfo", "utf8").split("\n")[0]!.trim().split(/\s+/).length - 4;
    const off = String(Math.max(cols, 11));
    if (before === off) return (reportingNote = `free page reporting was already paused (page_reporting_order ${before})`);
    writeFileSync(REPORTING_ORDER, `${off}\n`);
    const restore = () => {
      try {
        writeFileSync(REPORTING_ORDER, `${before}\n`);
      } catch {
        /* not ours to fix at exit */
      }
    };
    process.on("exit", restore);
    for (const [sig, num] of [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]] as const) {
      process.on(sig, () => {
        restore();
        // Alone on this signal: end the way the default action would have.
        if (process.listenerCount(sig) === 1) process.exit(128 + num);
      });
    }
    // Memory already handed back stays unbacked until touched: touch some now, once, so the
    // cold reads' fresh pages come from memory the host already backs (the allocator reuses
    // recently freed pages first, and drop_caches frees each run's pages for the next).
    const availMiB = Number(/MemAvailable:\s+(\d+)/.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0) / 1024;
    const warmMiB = Math.floor(Math.min(Number(process.env.BENCH_WARM_MIB ?? 4096), availMiB / 4));
    const t = performance.now();
    if (warmMiB > 0) Bun.spawnSync(["dd", "if=/dev/zero", "of=/dev/null", `bs=${warmMiB}M`, "count=1", "iflag=fullblock"], { timeout: 300_000 });
    const warmS = (performance.now() - t) / 1000;
    reportingNote =
      `free page reporting (virtio-balloon) paused for the run: page_reporting_order ${before} -> ${off}, restored at exit, ` +
      `and ${warmMiB} MiB of memory touched once to have the host back it (${warmS.toFixed(1)} s; a VM that hands freed memory back to its host ` +
      "charges each later first touch of a page to the process that touches it; BENCH_KEEP_PAGE_REPORTING=1 leaves it all alone)";
  } catch (e) {
    reportingNote = `free page reporting could NOT be paused (${(e as Error).message}): cold figures include the VM host's page faults`;
  }
  return reportingNote;
}

let dropWarned = false;
/**
 * `sync; echo 3 > /proc/sys/vm/drop_caches`. Returns false (and warns once) when not allowed.
 * The first call pauses free page reporting for the rest of the process (pauseFreePageReporting).
 */
export function dropCaches(): boolean {
  if (!reportingTried) {
    const note = pauseFreePageReporting();
    if (note) console.log(note);
  }
  try {
    Bun.spawnSync(["sync"], { timeout: 120_000 });
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch (e) {
    if (!dropWarned) {
      dropWarned = true;
      console.log(`WARNING: cannot drop the page cache (${(e as Error).message}): "cold" figures are not cold`);
    }
    return false;
  }
}

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `once` up to `reps` times and returns every value. The repetition rule of the
 * suite: a measurement is repeated only while one run takes less than `slowMs` (20 s), so
 * slow measurements are taken once. `once` returns the value, the wall time it took and
 * optionally a handle (e.g. a mount) to keep: the handle of the final run is returned,
 * those of earlier runs are given to `release` as soon as the next run has produced its own.
 */
export async function repeat<T, H = never>(
  reps: number,
  once: (rep: number) => Promise<{ value: T; ms: number; handle?: H }>,
  release?: (h: H) => Promise<void>,
  slowMs = 20_000,
): Promise<{ values: T[]; last: H | undefined }> {
  const values: T[] = [];
  let last: H | undefined;
  for (let rep = 1; rep <= reps; rep++) {
    if (last !== undefined && release) {
      const prev = last;
      last = undefined;
      await release(prev);
    }
    const r = await once(rep);
    values.push(r.value);
    last = r.handle;
    if (r.ms >= slowMs) break;
  }
  return { values, last };
}

/** Resident set size of `pid` in KiB, or undefined when it is gone. */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Samples VmRSS of `pid` every `everyMs` ms until stop(); returns the peak in KiB. */
export function rssSampler(pid: number, everyMs = 50): { stop(): number } {
  let peak = rssKiB(pid) ?? 0;
  const t = setInterval(() => {
    const v = rssKiB(pid);
    if (v !== undefined && v > peak) peak = v;
  }, everyMs);
  return {
    stop(): number {
      clearInterval(t);
      const v = rssKiB(pid);
      if (v !== undefined && v > peak) peak = v;
      return peak;
    },
  };
}

/**
 * `fn`'s result, the CPU seconds `pid` used while it ran, `pid`'s peak RSS in MiB (sampled
 * every 50 ms), and the whole machine's: CPU seconds busy (every process and the kernel,
 * /proc/stat) and the share of all cores that was (1: every core busy all the time).
 */
export async function withUsage<T>(pid: number, fn: () => Promise<T>): Promise<{ r: T; cpu: number; rssMiB: number; machineCpu: number; machineBusy: number }> {
  const c0 = cpuSeconds(pid);
  const m0 = machineCpu();
  const t0 = performance.now();
  const sampler = rssSampler(pid, 50);
  let peak = 0;
  let r: T;
  try {
    r = await fn();
  } finally {
    peak = sampler.stop();
  }
  const m1 = machineCpu();
  const wallS = (performance.now() - t0) / 1000;
  const busy = m1.busy - m0.busy;
  return { r, cpu: cpuSeconds(pid) - c0, rssMiB: peak / 1024, machineCpu: busy, machineBusy: busy / Math.max(1e-9, wallS * m1.cores) };
}

/** Busy CPU seconds of the whole machine since boot (all but idle and iowait, /proc/stat), and its core count. */
export function machineCpu(): { busy: number; cores: number } {
  const lines = readFileSync("/proc/stat", "utf8").split("\n");
  const f = lines[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
  const cores = lines.filter((l) => /^cpu\d+ /.test(l)).length;
  return { busy: busy / CLK_TCK, cores };
}

const CLK_TCK = 100;
/** utime+stime of `pid` (all threads) in seconds, or 0 when it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Mount points from our mount namespace's table. */
export function mountPoints(): Array<{ point: string; fstype: string }> {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => {
      const f = l.split(" ");
      const dash = f.indexOf("-");
      return { point: (f[4] ?? "").replace(/\\040/g, " "), fstype: f[dash + 1] ?? "" };
    });
}

export function isMounted(point: string, fstype?: string): boolean {
  return mountPoints().some((m) => m.point === point && (fstype === undefined || m.fstype === fstype));
}

/** Lazily unmounts every mount at or below `dir`, deepest first. */
export function lazyUnmountUnder(dir: string): void {
  const pts = mountPoints()
    .map((m) => m.point)
    .filter((p) => p === dir || p.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
  for (const p of pts) shSync(`umount -l '${p}' 2>/dev/null || fusermount -uz '${p}' 2>/dev/null || fusermount3 -uz '${p}' 2>/dev/null`);
}

export function loadavg(): string {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

export function fmtNum(v: number, digits?: number): string {
  if (!Number.isFinite(v)) return "n/a";
  const d = digits ?? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3);
  return v.toFixed(d);
}

/** rchar/wchar of `pid` from /proc/PID/io (bytes through read/write syscalls, sockets included). */
export function procIo(pid: number | undefined): { rchar: number; wchar: number } {
  if (pid === undefined) return { rchar: 0, wchar: 0 };
  try {
    const t = readFileSync(`/proc/${pid}/io`, "utf8");
    const get = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(t)?.[1] ?? 0);
    return { rchar: get("rchar"), wchar: get("wchar") };
  } catch {
    return { rchar: 0, wchar: 0 };
  }
}

/** utime+stime in seconds of every thread of `pid`, by thread id (empty when it is gone). */
export function threadCpu(pid: number): Map<number, { name: string; s: number }> {
  const out = new Map<number, { name: string; s: number }>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(Number(t), { name, s: (Number(rest[11]) + Number(rest[12])) / CLK_TCK });
    } catch {
      /* thread ended */
    }
  }
  return out;
}

/**
 * CPU used between two threadCpu() snapshots, summed per thread name (the main thread is
 * called "main"), busiest first. Threads that ended in between are missing (their time still
 * counts in cpuSeconds()).
 */
export function threadCpuByName(
  before: Map<number, { name: string; s: number }>,
  after: Map<number, { name: string; s: number }>,
  mainTid: number,
): Array<{ name: string; s: number; threads: number }> {
  const by = new Map<string, { s: number; threads: number }>();
  for (const [tid, a] of after) {
    const d = a.s - (before.get(tid)?.s ?? 0);
    const name = tid === mainTid ? "main" : a.name.replace(/[\s_-]*\d+$/, "");
    const cur = by.get(name) ?? { s: 0, threads: 0 };
    cur.s += d;
    cur.threads += 1;
    by.set(name, cur);
  }
  return [...by.entries()].map(([name, v]) => ({ name, ...v })).sort((x, y) => y.s - x.s);
}

/**
 * Samples of an A/B run, by variant and metric: `put` adds one, `print` shows each metric's
 * median with every sample in brackets (the A/B scripts read-ab, small-ab and verify-ab).
 */
export function abSamples(): {
  results: Record<string, Record<string, number[]>>;
  put(variant: string, metric: string, x: number): void;
  print(variantWidth: number, metricWidth: number): void;
} {
  const results: Record<string, Record<string, number[]>> = {};
  return {
    results,
    put(variant, metric, x) {
      ((results[variant] ??= {})[metric] ??= []).push(x);
    },
    print(variantWidth, metricWidth) {
      console.log("\nmedians (all samples in brackets):");
      for (const [v, metrics] of Object.entries(results)) {
        for (const [m, xs] of Object.entries(metrics)) {
          console.log(`  ${v.padEnd(variantWidth)} ${m.padEnd(metricWidth)} ${fmtNum(median(xs), 2).padStart(8)}  [${xs.map((x) => fmtNum(x, 2)).join(", ")}]`);
        }
      }
    },
  };
}
