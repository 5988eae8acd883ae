/**
 * `bucketfs status` and `bucketfs sync`: read-only views of a running (or stopped) daemon.
 *
 * Is: reading pid files, the mount table and each bucket's index (journal), and sending
 * SIGUSR1 for a sync, then waiting for the upload run it starts to finish. Is not: the
 * daemon; it never touches a mount point (a stat of a hung mount would hang us too).
 */
import { existsSync, readdirSync, lstatSync } from "node:fs";
import type { Config } from "../config/types.ts";
import { openIndex } from "../cache/db.ts";
import { cacheLayout, workdirOf } from "./daemon.ts";
import { livePid, FSTYPE } from "./mounts.ts";
import { mountAt } from "../util/mountinfo.ts";
import { fmtBytes } from "../util/log.ts";

function du(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      const p = `${d}/${n}`;
      try {
        const st = lstatSync(p);
        if (st.isDirectory()) stack.push(p);
        else if (st.isFile()) {
          files++;
          bytes += st.blocks * 512;
        }
      } catch {
        /* vanished */
      }
    }
  }
  return { files, bytes };
}

export function printStatus(config: Config): number {
  for (const b of config.buckets) {
    const layout = cacheLayout(b);
    const pid = livePid(layout.pid);
    const m = mountAt(b.mountpoint);
    const mounted = m?.fstype === FSTYPE ? "mounted" : m ? `occupied by ${m.fstype}` : "not mounted";
    console.log(`[${b.section}] s3://${b.bucket} at ${b.mountpoint}: ${pid ? `running (pid ${pid})` : "not running"}, ${mounted}`);
    const c = du(layout.root);
    console.log(`  cache ${layout.root}: ${c.files} files, ${fmtBytes(c.bytes)}`);
    if (!existsSync(layout.index)) continue;
    const db = openIndex(layout.index);
    try {
      const w = workdirOf(b, db);
      if (!w) {
        console.log("  workdir: none (read-only mount)");
        continue;
      }
      const s = w.journal.status(w.spec.localDir);
      console.log(`  workdir ${w.target}: ${s.pending.length} files pending upload (${fmtBytes(s.pendingBytes)})`);
      for (const p of s.pending.slice(0, 10)) console.log(`    ${p.path} (${fmtBytes(p.size)})`);
      if (s.pending.length > 10) console.log(`    ... and ${s.pending.length - 10} more`);
      for (const f of s.failures.slice(0, 5)) console.log(`  last error for ${f.path}: ${f.lastError}`);
      for (const r of s.runs) {
        const when = new Date(r.startedMs).toISOString();
        console.log(`  ${r.kind} ${when}: ${r.outcome}, ${r.files} files, ${fmtBytes(r.bytes)}, ${r.failed} failed`);
      }
    } finally {
      db.close();
    }
  }
  return 0;
}

export async function requestSync(config: Config, timeoutMs: number): Promise<number> {
  const pids = new Set<number>();
  for (const b of config.buckets) {
    const pid = livePid(cacheLayout(b).pid);
    if (pid !== undefined) pids.add(pid);
  }
  const withWorkdir = config.buckets.filter((b) => b.workdir !== undefined);
  if (pids.size === 0) throw new Error("bucketfs is not running (no live pid file); nothing to sync");
  if (withWorkdir.length === 0) {
    console.log("no bucket has a workdir; nothing to upload");
    return 0;
  }
  const since = Date.now();
  for (const pid of pids) process.kill(pid, "SIGUSR1");
  const deadline = since + timeoutMs;
  let failed = 0;
  for (const b of withWorkdir) {
    for (;;) {
      const db = openIndex(cacheLayout(b).index);
      const w = workdirOf(b, db)!;
      const run = w.journal.runs(20).find((r) => r.kind === "upload" && r.startedMs >= since - 1000 && r.finishedMs !== null);
      db.close();
      if (run) {
        console.log(`${b.bucket}: sync ${run.outcome}: ${run.files} files, ${fmtBytes(run.bytes)}, ${run.failed} failed`);
        if (run.outcome !== "ok") failed++;
        break;
      }
      if (Date.now() > deadline) throw new Error(`${b.bucket}: no sync result after ${timeoutMs / 1000} s`);
      await Bun.sleep(200);
    }
  }
  return failed ? 2 : 0;
}
