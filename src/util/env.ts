/**
 * The BUCKETFS_* environment switches: the one place where each is named, documented and read.
 *
 * Is: `ENV_SWITCHES` (name, who may set it, what it does) and `envSwitch(name)`, the only reader
 * of these variables (an empty value counts as unset). The README's list of the switches users
 * may set is generated from this table (`bun scripts/config-table.ts`), and
 * test/unit/env-switches.test.ts fails when the README differs or another module reads a
 * BUCKETFS_* variable itself. Is not: the config keys (config/keys.ts), nor variables that
 * other programs own (JOURNAL_STREAM, NOTIFY_SOCKET, UV_THREADPOOL_SIZE, HTTPS_PROXY, the AWS_*
 * credential chain), which their modules read where they are used.
 */

/** `users`: documented in the README, kept across releases. `diagnostics`: for A/B runs, benchmarks and tests. */
export type EnvAudience = "users" | "diagnostics";

export interface EnvSwitchSpec {
  audience: EnvAudience;
  /** The values it takes, as shown in the README. */
  values: string;
  /** What it does (one sentence, README text). */
  doc: string;
}

export const ENV_SWITCHES = {
  BUCKETFS_LOG_LEVEL: {
    audience: "users",
    values: "`debug`, `info` (default), `warn`, `error`",
    doc: "The log threshold; `--log-level` on the command line wins over it.",
  },
  BUCKETFS_LOG_FILE: {
    audience: "users",
    values: "a path",
    doc: "Every log line is also appended to this file, opened per line so logrotate needs no signal (the systemd unit sets `/var/log/bucketfs.log`).",
  },
  BUCKETFS_LOG_FORMAT: {
    audience: "users",
    values: "`journal`",
    doc: "Write sd-daemon priority prefixes (`<6>`) on stderr even where systemd's JOURNAL_STREAM is not set.",
  },
  BUCKETFS_LIBFUSE: {
    audience: "users",
    values: "a path or soname",
    doc: "The libfuse3 to load (3.3 or newer); by default `libfuse3.so.4`, then `libfuse3.so.3`.",
  },
  BUCKETFS_SPLICE: {
    audience: "diagnostics",
    values: "`0`",
    doc: "Do not splice cached file ranges into /dev/fuse (copy them instead).",
  },
  BUCKETFS_READ_MODE: {
    audience: "diagnostics",
    values: "`copy`",
    doc: "Serve reads of cached files by copying them through the daemon instead of handing libfuse the file descriptor.",
  },
  BUCKETFS_READ_AHEAD_KB: {
    audience: "diagnostics",
    values: "KiB",
    doc: "The mount's read_ahead_kb, which bounds the size of READ requests (default 1008).",
  },
  BUCKETFS_NO_REEXEC: {
    audience: "diagnostics",
    values: "any",
    doc: "Do not re-exec the process with a larger UV_THREADPOOL_SIZE at start.",
  },
  BUCKETFS_HTTP: {
    audience: "diagnostics",
    values: "`fetch`",
    doc: "Send every S3 request through Bun's fetch instead of the HTTP/1.1 socket client (A/B runs).",
  },
  BUCKETFS_CONNECT_TIMEOUT_MS: {
    audience: "diagnostics",
    values: "ms",
    doc: "The TCP connect plus TLS handshake timeout of a new S3 connection (default 10000); tests shorten it.",
  },
  BUCKETFS_HASH_WORKER: {
    audience: "diagnostics",
    values: "`0`",
    doc: "Hash streamed objects on the READ thread instead of the hashing Workers (A/B runs).",
  },
} as const satisfies Record<string, EnvSwitchSpec>;

export type EnvSwitch = keyof typeof ENV_SWITCHES;

/** The value of switch `name`, or undefined when it is unset or empty. */
export function envSwitch(name: EnvSwitch): string | undefined {
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : v;
}

/** The README's list of the switches users may set (markdown table). */
export function envTable(): string {
  const rows = Object.entries(ENV_SWITCHES as Record<string, EnvSwitchSpec>)
    .filter(([, s]) => s.audience === "users")
    .map(([name, s]) => `| \`${name}\` | ${s.values} | ${s.doc} |`);
  return ["| variable | values | what it does |", "|---|---|---|", ...rows].join("\n");
}
