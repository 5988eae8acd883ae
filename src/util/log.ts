/**
 * The one logger: plain lines on stderr, with sd-daemon `<N>` priority prefixes when
 * running under systemd (journald then keeps the level), ISO timestamps otherwise.
 *
 * Is: leveled, structured-enough text logging. Is not: a place where secrets may go; callers
 * never pass credentials, and `redact()` exists for values that might carry them (URLs).
 */
import { appendFileSync } from "node:fs";
import { envSwitch } from "./env.ts";

export type Level = "debug" | "info" | "warn" | "error";

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SD_PRIO: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3 };

let threshold: Level = parseLevel(envSwitch("BUCKETFS_LOG_LEVEL")) ?? "info";
const useSdPrefix = Boolean(process.env.JOURNAL_STREAM) || envSwitch("BUCKETFS_LOG_FORMAT") === "journal";
let sink: (line: string) => void = (line) => process.stderr.write(line + "\n");
/**
 * BUCKETFS_LOG_FILE (the systemd unit sets /var/log/bucketfs.log): every line is also
 * appended there, with a timestamp, while stderr keeps going to the journal. The file is
 * opened per line (O_APPEND), so logrotate needs no signal: after a rename the next line
 * creates a new file (SIGHUP would stop the daemon).
 */
let logFile = envSwitch("BUCKETFS_LOG_FILE");

/** Append one line to BUCKETFS_LOG_FILE, if set (also for errors printed outside the logger). */
export function appendLogFile(level: Level, text: string): void {
  if (!logFile) return;
  try {
    appendFileSync(logFile, `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${text}\n`, { mode: 0o640 });
  } catch (err) {
    const f = logFile;
    logFile = undefined;
    process.stderr.write(`cannot write log file ${f}: ${(err as Error).message}; logging to stderr only\n`);
  }
}

export function parseLevel(v: string | undefined): Level | undefined {
  return v !== undefined && v in ORDER ? (v as Level) : undefined;
}

export function setLevel(level: Level): void {
  threshold = level;
}

/** For tests: capture lines instead of writing them. Returns a restore function. */
export function setSink(fn: (line: string) => void): () => void {
  const prev = sink;
  sink = fn;
  return () => {
    sink = prev;
  };
}

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  /** A logger whose lines carry `[scope]` after this one's. */
  child(scope: string): Logger;
  enabled(level: Level): boolean;
}

function emit(level: Level, scope: string, msg: string): void {
  if (ORDER[level] < ORDER[threshold]) return;
  const tag = scope ? `[${scope}] ` : "";
  const head = useSdPrefix ? `<${SD_PRIO[level]}>` : `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} `;
  sink(`${head}${tag}${msg}`);
  appendLogFile(level, `${tag}${msg}`);
}

export function logger(scope = ""): Logger {
  return {
    debug: (m) => emit("debug", scope, m),
    info: (m) => emit("info", scope, m),
    warn: (m) => emit("warn", scope, m),
    error: (m) => emit("error", scope, m),
    child: (s) => logger(scope ? `${scope}] [${s}` : s),
    enabled: (l) => ORDER[l] >= ORDER[threshold],
  };
}

/** Remove userinfo and query strings from a URL-ish string before logging it. */
export function redact(s: string): string {
  return s.replace(/\/\/[^/@\s]*@/g, "//***@").replace(/([?&](?:X-Amz-[^=]*|Signature|AWSAccessKeyId)=)[^&\s]*/gi, "$1***");
}

/** `1.5 GiB`, `320 KiB`: sizes for log lines. */
export function fmtBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** Error message for a log line, including a cause chain, never a stack. */
export function errMsg(err: unknown): string {
  if (err instanceof Error) {
    // Append the cause only when the message does not already carry it (wrapped errors often do).
    const cause = err.cause instanceof Error && !err.message.includes(err.cause.message) ? `: ${err.cause.message}` : "";
    return `${err.message}${cause}`;
  }
  return String(err);
}
