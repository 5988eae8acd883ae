/**
 * The daemon: one BucketRun per bucket of the config, and the signals that drive them.
 *
 * Every bucket prepares in parallel (prefetch, recovery upload); only when all are ready is
 * anything mounted, and a failure of one stops the others (exit 1, nothing stays mounted).
 * Signals become events for every run: SIGTERM, SIGHUP and a first SIGINT `stop`, a second
 * SIGINT `abort`, SIGUSR1 `sync`; each run's phase accepts or refuses them (bucket-run.ts).
 *
 * Is: config → runs → signal wiring, readiness, and the exit code from the runs' final
 * states. Is not: the lifecycle of a bucket (bucket-run.ts) or any transfer.
 */
import type { Config } from "../config/types.ts";
import { BucketRun, combinedExitCode } from "./bucket-run.ts";
import { Evictor } from "../cache/evictor.ts";
import { logger } from "../util/log.ts";

export interface DaemonOptions {
  /** Called once every bucket is mounted and bound (systemd READY=1). */
  onReady?: () => void;
  /** Status text for the service manager (STATUS=...). */
  onStatus?: (text: string) => void;
  onStopping?: () => void;
  debugFuse?: boolean;
  /** Take every workdir lease even from a live holder (`--take-over`). */
  takeOver?: boolean;
}

const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"] as const;

/** Run the daemon until a stop signal; resolves with the process exit code. */
/**
 * One Evictor per cachepath: the limits are for the cachepath (config/load.ts gives every
 * section sharing it the same values), so buckets that share a disk share one budget.
 */
export function evictorsFor(config: Config): Map<string, Evictor> {
  const out = new Map<string, Evictor>();
  for (const b of config.buckets) {
    if (out.has(b.cachePath)) continue;
    out.set(b.cachePath, new Evictor(b.cachePath, { maxBytes: b.cacheSize, minFree: b.cacheMinFree }, logger("cache")));
  }
  return out;
}

export async function runDaemon(config: Config, opts: DaemonOptions = {}): Promise<number> {
  const log = logger("daemon");
  for (const w of config.warnings) log.warn(w);
  let stopping = false;
  let wake: () => void = () => {};
  const stopped = new Promise<void>((r) => (wake = r));

  const stopAll = (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${why}: stopping`);
    for (const r of runs) r.handle("stop");
    wake();
  };
  const evictors = evictorsFor(config);
  const runs = config.buckets.map(
    (cfg) =>
      new BucketRun(cfg, {
        evictor: evictors.get(cfg.cachePath)!,
        debugFuse: Boolean(opts.debugFuse),
        takeOver: opts.takeOver === true,
        ...(opts.onStatus ? { onStatus: opts.onStatus } : {}),
        onUnmounted: (r) => stopAll(`${r.cfg.mountpoint} unmounted from outside`),
      }),
  );

  const onSignal = (sig: NodeJS.Signals) => {
    if (sig === "SIGUSR1") {
      log.info("SIGUSR1: uploading workdirs now (checkpoint, mounts stay)");
      for (const r of runs) r.handle("sync");
    } else if (!stopping) stopAll(sig);
    else if (sig === "SIGINT") {
      log.warn("second SIGINT: aborting the upload; pending files stay in the cache for the next start");
      for (const r of runs) r.handle("abort");
    } else log.warn(`${sig} again: still stopping (uploads in progress); SIGINT twice aborts the upload`);
  };
  const safetyNet = () => {
    // Last resort on an unexpected exit: never leave a dead mount behind ("Transport endpoint
    // is not connected"). A lazy detach of the FUSE mount also detaches the bind below it.
    for (const r of runs) r.detachNow();
  };
  process.on("exit", safetyNet);
  for (const s of SIGNALS) process.on(s, onSignal);

  try {
    const prepared = await Promise.all(
      runs.map(async (r) => {
        const ok = await r.prepare();
        if (!ok && r.phase === "failed") stopAll(`bucket ${r.cfg.bucket} could not start`);
        return ok;
      }),
    );
    if (prepared.every(Boolean) && !stopping) {
      for (const e of evictors.values()) e.start();
      for (const r of runs) {
        await r.mount();
        if (r.phase === "failed") stopAll(`bucket ${r.cfg.bucket} could not mount`);
        if (stopping) break;
      }
    }
    if (!stopping) {
      log.info(`ready: ${runs.map((r) => r.cfg.mountpoint).join(", ")}`);
      opts.onReady?.();
      await stopped;
    }
    opts.onStopping?.();
    await Promise.all(runs.map((r) => r.stop()));
  } finally {
    for (const e of evictors.values()) e.stop();
    process.off("exit", safetyNet);
    for (const s of SIGNALS) process.off(s, onSignal);
  }
  const code = combinedExitCode(runs.map((r) => r.exitCode));
  log.info(code === 0 ? "stopped cleanly" : `stopped with errors (exit ${code})`);
  return code;
}
