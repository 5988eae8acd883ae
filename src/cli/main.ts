#!/usr/bin/env bun
/**
 * The `bucketfs` command line.
 *
 *   bucketfs [--config FILE]          mount every bucket of the config and serve until SIGTERM
 *   bucketfs check-config [--config]  validate the config and print a summary (no secrets)
 *   bucketfs sync [--config]          upload the workdirs now, mounts stay (a checkpoint)
 *   bucketfs status [--config]        mounts, cache size, files pending upload, last runs
 *   bucketfs verify [--config]        check S3 against each workdir's latest commit record
 *
 * Is: argument parsing and exit codes. Is not: any of the work (service/, config/).
 */
import { defineCommand, runMain } from "citty";
import { ConfigError, describeConfig, loadConfig } from "../config/load.ts";
import type { Config } from "../config/types.ts";
import { appendLogFile, parseLevel, setLevel, logger, errMsg } from "../util/log.ts";

export const VERSION = "0.1.0";
const DEFAULT_CONFIG = "/etc/bucketfs/bucketfs.conf";

const common = {
  config: { type: "string" as const, alias: "c", default: DEFAULT_CONFIG, description: "config file", valueHint: "path" },
  "log-level": { type: "string" as const, description: "debug, info, warn or error (or BUCKETFS_LOG_LEVEL)" },
};

function load(path: string, level: string | undefined): Config {
  const l = parseLevel(level);
  if (level !== undefined && !l) throw new ConfigError(path, `--log-level must be debug, info, warn or error`);
  if (l) setLevel(l);
  return loadConfig(path);
}

/** Run `fn`; a ConfigError or any other error is one clear line and exit code 1. */
async function guarded(fn: () => Promise<number> | number): Promise<never> {
  let code: number;
  try {
    code = await fn();
  } catch (err) {
    const line = err instanceof ConfigError ? `config error: ${err.message}` : errMsg(err);
    console.error(`bucketfs: ${line}`);
    appendLogFile("error", line);
    code = 1;
  }
  process.exit(code);
}

const mount = defineCommand({
  meta: { name: "bucketfs", version: VERSION, description: "Mount the buckets of the config and serve until SIGTERM" },
  args: {
    ...common,
    "debug-fuse": { type: "boolean", description: "libfuse protocol trace on stderr" },
    "take-over": { type: "boolean", description: "take each workdir's lease even from a node that still renews it (only when that node is dead)" },
  },
  run: ({ args }) =>
    guarded(async () => {
      const config = load(args.config, args["log-level"]);
      // Fail before touching anything (cache, pid file, prefetch, mountpoints) when
      // libfuse3 is missing: the error names the packages to install.
      const { fuse } = await import("../fuse/ffi.ts");
      fuse();
      const { ensureThreadpool } = await import("../service/reexec.ts");
      ensureThreadpool(Math.max(16, 8 + 2 * config.buckets.length));
      const { runDaemon } = await import("../service/daemon.ts");
      const { notifier } = await import("../service/notify.ts");
      const n = notifier();
      return runDaemon(config, {
        debugFuse: args["debug-fuse"],
        takeOver: args["take-over"],
        onReady: () => n.send("READY=1\nSTATUS=serving"),
        onStopping: () => n.send("STOPPING=1\nSTATUS=stopping"),
        onStatus: (s) => n.send(`STATUS=${s}\nEXTEND_TIMEOUT_USEC=120000000`),
      });
    }),
});

const checkConfig = defineCommand({
  meta: { name: "check-config", description: "Validate the config file and print what it means (never secrets)" },
  args: common,
  run: ({ args }) =>
    guarded(() => {
      const config = load(args.config, args["log-level"]);
      for (const w of config.warnings) console.error(`warning: ${w}`);
      console.log(describeConfig(config));
      return 0;
    }),
});

const sync = defineCommand({
  meta: { name: "sync", description: "Upload the workdirs now without unmounting, and wait for the result" },
  args: { ...common, timeout: { type: "string" as const, default: "3600", description: "seconds to wait" } },
  run: ({ args }) =>
    guarded(async () => {
      const { requestSync } = await import("../service/status.ts");
      return requestSync(load(args.config, args["log-level"]), Number(args.timeout) * 1000);
    }),
});

const status = defineCommand({
  meta: { name: "status", description: "Mounts, cache size, files pending upload, recent runs" },
  args: common,
  run: ({ args }) =>
    guarded(async () => {
      const { printStatus } = await import("../service/status.ts");
      return printStatus(load(args.config, args["log-level"]));
    }),
});

const verify = defineCommand({
  meta: { name: "verify", description: "Check S3 against each workdir's latest commit record (exit 0 same, 1 differs, 2 cannot verify)" },
  args: { ...common, json: { type: "boolean", description: "machine-readable output" } },
  run: ({ args }) =>
    guarded(async () => {
      const { runVerify } = await import("../service/verify.ts");
      return runVerify(load(args.config, args["log-level"]), { json: args.json });
    }),
});

export async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  if (first === "check-config") return runMain(checkConfig, { rawArgs: rest });
  if (first === "sync") return runMain(sync, { rawArgs: rest });
  if (first === "status") return runMain(status, { rawArgs: rest });
  if (first === "verify") return runMain(verify, { rawArgs: rest });
  if (first === "mount") return runMain(mount, { rawArgs: rest });
  if (first !== undefined && !first.startsWith("-")) {
    console.error(`bucketfs: unknown command "${first}" (commands: mount, check-config, sync, status, verify; see --help)`);
    process.exit(1);
  }
  return runMain(mount, { rawArgs: argv });
}

if (import.meta.main) {
  process.on("unhandledRejection", (err) => logger("daemon").error(`unhandled: ${errMsg(err)}`));
  await main(process.argv.slice(2));
}
