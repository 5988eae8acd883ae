#!/usr/bin/env bun
/**
 * The `bucketfs` command line.
 *
 *   bucketfs [mount] [--config FILE | FILE]   mount every bucket of the config and serve until SIGTERM
 *   bucketfs check-config [--config FILE | FILE]  validate the config and print a summary (no secrets)
 *   bucketfs sync [--config FILE | FILE]      upload the workdirs now, mounts stay (a checkpoint)
 *   bucketfs status [--config FILE | FILE] [--json]  phase, mounts, cache size, files pending upload, last runs
 *   bucketfs verify [--config FILE | FILE]    check S3 against each workdir's latest commit record
 *
 * (`bucketfs` alone takes --config only: a bare word there is a command name.)
 *
 * Is: argument parsing and exit codes. Is not: any of the work (service/, config/).
 */
import { defineCommand, runMain } from "citty";
import { ConfigError, describeConfig, loadConfig } from "../config/load.ts";
import type { Config } from "../config/types.ts";
import { appendLogFile, parseLevel, setLevel, logger, errMsg } from "../util/log.ts";

export const VERSION = "0.1.0";
const DEFAULT_CONFIG = "/etc/bucketfs/bucketfs.conf";

const options = {
  config: { type: "string" as const, alias: "c", description: `config file (default ${DEFAULT_CONFIG})`, valueHint: "path" },
  "log-level": { type: "string" as const, description: "debug, info, warn or error (or BUCKETFS_LOG_LEVEL)" },
};
/** Options plus the config path as a positional argument, for every subcommand that reads the config. */
const common = {
  file: { type: "positional" as const, required: false, description: "config file (same as --config)", valueHint: "path" },
  ...options,
};

interface ConfigArgs {
  config?: string;
  file?: string;
  "log-level"?: string;
  _: string[];
}

/** The config named by --config or the positional FILE (not both, unless equal), else the default. */
function configPath(args: ConfigArgs): string {
  const extra = args._.slice(args.file !== undefined ? 1 : 0);
  if (extra.length > 0) throw new ConfigError(args.file ?? args.config ?? DEFAULT_CONFIG, `unexpected argument(s) after the config file: ${extra.join(" ")}`);
  if (args.file !== undefined && args.config !== undefined && args.file !== args.config) {
    throw new ConfigError(args.file, `two config files given (--config ${args.config} and ${args.file}); give one`);
  }
  return args.file ?? args.config ?? DEFAULT_CONFIG;
}

function load(args: ConfigArgs): Config {
  const path = configPath(args);
  const level = args["log-level"];
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

/** Options of mount (also taken by `bucketfs` alone). */
const mountOptions = {
  "debug-fuse": { type: "boolean" as const, description: "libfuse protocol trace on stderr" },
  "take-over": {
    type: "boolean" as const,
    description: "take each workdir's lease even from a node that still renews it (only when that node is dead)",
  },
};

async function serve(args: ConfigArgs & { "debug-fuse"?: boolean; "take-over"?: boolean }): Promise<never> {
  return guarded(async () => {
    const config = load(args);
    // Fail before touching anything (cache, pid file, prefetch, mountpoints) when
    // libfuse3 is missing or older than 3.3: the error names the packages to install.
    const { libfuse } = await import("../fuse/ffi.ts");
    libfuse();
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
  });
}

const mount = defineCommand({
  meta: { name: "mount", description: "Mount the buckets of the config and serve until SIGTERM (the default command)" },
  args: { ...common, ...mountOptions },
  run: ({ args }) => serve(args),
});

const checkConfig = defineCommand({
  meta: { name: "check-config", description: "Validate the config file and print what it means (never secrets)" },
  args: common,
  run: ({ args }) =>
    guarded(() => {
      const config = load(args);
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
      return requestSync(load(args), Number(args.timeout) * 1000);
    }),
});

const status = defineCommand({
  meta: { name: "status", description: "Phase, mounts, cache size, files pending upload, recent runs" },
  args: { ...common, json: { type: "boolean" as const, description: "machine-readable output" } },
  run: ({ args }) =>
    guarded(async () => {
      const { printStatus } = await import("../service/status.ts");
      return printStatus(load(args), Boolean(args.json));
    }),
});

const verify = defineCommand({
  meta: { name: "verify", description: "Check S3 against each workdir's latest commit record (exit 0 same, 1 differs, 2 cannot verify)" },
  args: { ...common, json: { type: "boolean" as const, description: "machine-readable output" } },
  run: ({ args }) =>
    guarded(async () => {
      const { runVerify } = await import("../service/workdir/verify.ts");
      return runVerify(load(args), { json: args.json });
    }),
});

const subCommands = { mount, "check-config": checkConfig, sync, status, verify };

/** `bucketfs` itself: mount (with --config only), and --help listing every subcommand. */
const root = defineCommand({
  meta: { name: "bucketfs", version: VERSION, description: "FUSE filesystem for S3 buckets, with a transactional workdir" },
  args: { ...options, ...mountOptions },
  subCommands,
  run: ({ args }) => {
    // citty runs this after a subcommand too; a subcommand has already exited (guarded).
    if (args._.length > 0) return;
    return serve({ ...args, _: [] });
  },
});

export async function main(argv: string[]): Promise<void> {
  const first = argv[0];
  if (first !== undefined && !first.startsWith("-") && !(first in subCommands)) {
    const hint = first.includes("/") ? `; for a config file write bucketfs mount ${first} or --config ${first}` : "";
    console.error(`bucketfs: unknown command "${first}" (commands: ${Object.keys(subCommands).join(", ")}; see --help)${hint}`);
    process.exit(1);
  }
  return runMain(root, { rawArgs: argv });
}

if (import.meta.main) {
  process.on("unhandledRejection", (err) => logger("daemon").error(`unhandled: ${errMsg(err)}`));
  await main(process.argv.slice(2));
}
