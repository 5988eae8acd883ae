/**
 * Test helper: starts a real, throwaway S3 server on loopback for integration
 * tests — MinIO (single-drive mode) or, where MinIO could not be built,
 * versitygw (posix backend). The binaries are provided by scripts/setup.sh in
 * .build/bin, and .build/s3server names the one to use (env
 * BUCKETFS_S3SERVER=minio|versitygw overrides it).
 *
 * Each server gets its own free 127.0.0.1 port and its own data dir under
 * /tmp/bucketfs-test/ (layout: `<dataDir>/storage` holds the objects,
 * `<dataDir>/server.log` the server's stdout+stderr). Servers still running
 * when the test process ends are killed: by a process "exit"/SIGINT/SIGTERM
 * hook, and — since bun test ends without running "exit" hooks — by the
 * kernel (the server is started under `setpriv --pdeathsig KILL`). Data dirs
 * left by a dead test process are swept by the next startS3Server().
 * Set BUCKETFS_KEEP_TEST_DATA=1 to keep data dirs for debugging.
 *
 * This is NOT a mock and NOT part of bucketfs itself; it never talks to
 * anything but 127.0.0.1. Bucket creation goes through the independent boto3
 * client in s3tool.ts, not through bucketfs code.
 */
import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { s3tool } from "./s3tool.ts";

export type S3ServerKind = "minio" | "versitygw";

export interface S3Server {
  /** `http://127.0.0.1:PORT` */
  endpoint: string;
  /** Port of `endpoint`. */
  port: number;
  accessKey: string;
  secretKey: string;
  region: "us-east-1";
  /** The certificate to trust, when the server speaks HTTPS (`tls: true`). */
  caFile?: string;
  /** Root of this server's files; objects live in `<dataDir>/storage`. */
  dataDir: string;
  /** The server's stdout+stderr (appended across restarts). */
  logFile: string;
  kind: S3ServerKind;
  /** PID of the running server process, undefined after stop(). */
  readonly pid: number | undefined;
  /** Kills the server, waits for it to exit, and removes the data dir (unless the caller supplied it). */
  stop(): Promise<void>;
  /** Kills the server and starts it again on the same port and data dir; resolves once it answers. */
  restart(): Promise<void>;
  /** Creates a bucket (no error if it already exists and is ours). */
  createBucket(name: string): Promise<void>;
}

export interface StartS3ServerOptions {
  /** Use this directory (created if needed, kept on stop) instead of a fresh one under /tmp/bucketfs-test/. */
  dataDir?: string;
  /** How long to wait for the server to answer, in ms (default 60 000). */
  readyTimeoutMs?: number;
  /**
   * Serve HTTPS (MinIO only) with a self-signed certificate for 127.0.0.1 made for this server;
   * its path is `caFile`. Clients trust it through NODE_EXTRA_CA_CERTS (Bun) or AWS_CA_BUNDLE (boto3).
   */
  tls?: boolean;
}

/** Where test servers, daemons and mounts live; BUCKETFS_TEST_ROOT moves it (parallel checkouts each use their own). */
export const TEST_ROOT = process.env.BUCKETFS_TEST_ROOT || "/tmp/bucketfs-test";
const REPO_ROOT = resolve(import.meta.dir, "..", "..");
const BIN_DIR = join(REPO_ROOT, ".build", "bin");
const SETPRIV = "/usr/bin/setpriv";

/** Every server process this module started and has not yet seen exit. */
const live = new Set<Subprocess>();
/** Data dirs this module created and has not yet removed. */
const ownedDirs = new Set<string>();
let exitHookInstalled = false;

function killAllNow(): void {
  for (const p of live) {
    try {
      p.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  live.clear();
  if (process.env.BUCKETFS_KEEP_TEST_DATA !== "1") {
    for (const d of ownedDirs) rmSync(d, { recursive: true, force: true });
  }
  ownedDirs.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", killAllNow);
  // 'exit' does not fire when the process is ended by a signal.
  const signals: Array<[NodeJS.Signals, number]> = [
    ["SIGINT", 2],
    ["SIGTERM", 15],
    ["SIGHUP", 1],
  ];
  for (const [sig, num] of signals) {
    const onSignal = (): void => {
      killAllNow();
      // Keep the default "die on this signal" behaviour unless someone else handles it.
      if (process.listenerCount(sig) <= 1) process.exit(128 + num);
    };
    process.on(sig, onSignal);
  }
}

/**
 * Removes data dirs under TEST_ROOT left by test processes that died without
 * stop() (bun test does not run "exit" hooks): each dir we create holds an
 * `owner` file with the creating process' pid.
 */
function sweepStaleDataDirs(): void {
  if (process.env.BUCKETFS_KEEP_TEST_DATA === "1") return;
  let entries: string[];
  try {
    entries = readdirSync(TEST_ROOT);
  } catch {
    return;
  }
  for (const name of entries) {
    if (!name.startsWith("s3-")) continue;
    const dir = join(TEST_ROOT, name);
    let owner: number;
    try {
      owner = Number(readFileSync(join(dir, "owner"), "utf8").trim());
    } catch {
      continue; // not ours, or being created right now
    }
    if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid) continue;
    if (existsSync(`/proc/${owner}`)) continue;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Which server binary to use: env override, then .build/s3server, then whatever binary exists. */
export function s3ServerKind(): S3ServerKind {
  const env = process.env.BUCKETFS_S3SERVER;
  if (env === "minio" || env === "versitygw") return env;
  const recorded = join(REPO_ROOT, ".build", "s3server");
  if (existsSync(recorded)) {
    const word = readFileSync(recorded, "utf8").trim();
    if (word === "minio" || word === "versitygw") return word;
  }
  if (existsSync(join(BIN_DIR, "minio"))) return "minio";
  if (existsSync(join(BIN_DIR, "versitygw"))) return "versitygw";
  throw new Error(`no S3 server binary in ${BIN_DIR}: run scripts/setup.sh first`);
}

/** A port on 127.0.0.1 that was free a moment ago. */
async function freePort(): Promise<number> {
  return await new Promise<number>((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        srv.close();
        reject(new Error("could not determine a free port"));
        return;
      }
      const port = addr.port;
      srv.close(() => resolvePort(port));
    });
  });
}

function randomToken(len: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(len));
  let out = "";
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

function tail(file: string, lines: number): string {
  try {
    const text = readFileSync(file, "utf8");
    return text.split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Launch {
  kind: S3ServerKind;
  port: number;
  consolePort: number;
  storageDir: string;
  logFile: string;
  accessKey: string;
  secretKey: string;
  /** MinIO's --certs-dir (public.crt, private.key) when serving HTTPS. */
  certsDir?: string;
}

/** A self-signed certificate for 127.0.0.1 in `dir` (public.crt, private.key), as MinIO wants them. */
function makeCert(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const r = Bun.spawnSync([
    "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "private.key"), "-out", join(dir, "public.crt"),
  ], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl could not make a test certificate: ${r.stderr.toString()}`);
}

function launch(l: Launch): Subprocess {
  let cmd: string[];
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/root",
  };
  if (l.kind === "minio") {
    cmd = [
      join(BIN_DIR, "minio"),
      "server",
      "--quiet",
      "--address",
      `127.0.0.1:${l.port}`,
      "--console-address",
      `127.0.0.1:${l.consolePort}`,
      ...(l.certsDir ? ["--certs-dir", l.certsDir] : []),
      l.storageDir,
    ];
    Object.assign(env, {
      MINIO_ROOT_USER: l.accessKey,
      MINIO_ROOT_PASSWORD: l.secretKey,
      MINIO_BROWSER: "off",
      MINIO_UPDATE: "off",
      MINIO_REGION: "us-east-1",
      MINIO_CALLHOME_ENABLE: "off",
    });
  } else {
    cmd = [
      join(BIN_DIR, "versitygw"),
      "--access",
      l.accessKey,
      "--secret",
      l.secretKey,
      "--region",
      "us-east-1",
      "--port",
      `127.0.0.1:${l.port}`,
      "--quiet",
      "posix",
      "--sidecar",
      join(l.storageDir, "..", "sidecar"),
      l.storageDir,
    ];
  }
  if (!existsSync(cmd[0] ?? "")) {
    throw new Error(`${cmd[0]} not found: run scripts/setup.sh first`);
  }
  // bun test ends without emitting process "exit", so also have the kernel
  // SIGKILL the server when this process dies (setpriv execs: same pid).
  if (existsSync(SETPRIV)) cmd = [SETPRIV, "--pdeathsig", "KILL", "--", ...cmd];
  // Opened for appending so the log of earlier runs survives restart().
  const logFd = openSync(l.logFile, "a");
  let proc: Subprocess;
  try {
    proc = Bun.spawn({
      cmd,
      env,
      cwd: join(l.storageDir, ".."),
      stdin: "ignore",
      stdout: logFd,
      stderr: logFd,
    });
  } finally {
    closeSync(logFd);
  }
  live.add(proc);
  void proc.exited.then(() => live.delete(proc));
  return proc;
}

/** Resolves once the server answers S3 requests; throws (with the log tail) on timeout or early exit. */
async function waitReady(proc: Subprocess, l: Launch, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const scheme = l.certsDir ? "https" : "http";
  const url =
    l.kind === "minio"
      ? `${scheme}://127.0.0.1:${l.port}/minio/health/ready`
      : `${scheme}://127.0.0.1:${l.port}/`;
  const tls = l.certsDir ? { tls: { ca: readFileSync(join(l.certsDir, "public.crt"), "utf8") } } : {};
  let lastProblem = "no answer yet";
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(
        `${l.kind} exited early (code ${proc.exitCode}, signal ${proc.signalCode}) on port ${l.port}.\n` +
          `--- tail of ${l.logFile} ---\n${tail(l.logFile, 40)}`,
      );
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000), ...tls } as RequestInit);
      await res.arrayBuffer();
      // MinIO: 200 from the readiness probe. versitygw: any HTTP answer
      // (an unauthenticated GET / is refused with 403) means it is serving.
      if (l.kind === "minio" ? res.status === 200 : res.status > 0) return;
      lastProblem = `HTTP ${res.status} from ${url}`;
    } catch (e) {
      lastProblem = e instanceof Error ? e.message : String(e);
    }
    await sleep(100);
  }
  throw new Error(
    `${l.kind} did not become ready on 127.0.0.1:${l.port} within ${timeoutMs} ms (${lastProblem}).\n` +
      `--- tail of ${l.logFile} ---\n${tail(l.logFile, 40)}`,
  );
}

async function kill(proc: Subprocess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    await proc.exited;
    return;
  }
  proc.kill("SIGTERM");
  const exited = await Promise.race([proc.exited.then(() => true), sleep(5000).then(() => false)]);
  if (!exited) {
    proc.kill("SIGKILL");
    await proc.exited;
  }
  live.delete(proc);
}

/** Appends `text` to the log file (the spawned server's output goes there too). */
function appendLog(file: string, text: string): void {
  appendFileSync(file, text);
}

/**
 * Starts an S3 server on a free 127.0.0.1 port and resolves once it answers.
 * Call `stop()` when done (an exit hook kills it anyway if the test process ends).
 */
export async function startS3Server(opts?: StartS3ServerOptions): Promise<S3Server> {
  installExitHook();
  const kind = s3ServerKind();
  const readyTimeoutMs = opts?.readyTimeoutMs ?? 60_000;
  mkdirSync(TEST_ROOT, { recursive: true });
  const ownsDir = opts?.dataDir === undefined;
  const dataDir = opts?.dataDir ?? mkdtempSync(join(TEST_ROOT, `s3-${kind}-`));
  if (ownsDir) {
    ownedDirs.add(dataDir);
    writeFileSync(join(dataDir, "owner"), `${process.pid}\n`);
    sweepStaleDataDirs();
  }
  const storageDir = join(dataDir, "storage");
  mkdirSync(storageDir, { recursive: true });
  if (kind === "versitygw") mkdirSync(join(dataDir, "sidecar"), { recursive: true });
  const logFile = join(dataDir, "server.log");
  if (opts?.tls && kind !== "minio") throw new Error(`tls: only with MinIO (the server here is ${kind})`);
  const certsDir = opts?.tls ? join(dataDir, "certs") : undefined;
  if (certsDir) makeCert(certsDir);

  const accessKey = `bfstest${randomToken(8)}`;
  const secretKey = `bfstest-secret-${randomToken(16)}`;

  // The port is only known free until we bind it; retry with new ports if
  // another process grabbed it in between.
  let l: Launch | undefined;
  let proc: Subprocess | undefined;
  let lastError: unknown;
  for (let attempt = 0; attempt < 3 && proc === undefined; attempt++) {
    const candidate: Launch = {
      kind,
      port: await freePort(),
      consolePort: await freePort(),
      storageDir,
      logFile,
      accessKey,
      secretKey,
      ...(certsDir ? { certsDir } : {}),
    };
    appendLog(logFile, `\n=== bucketfs test: starting ${kind} on 127.0.0.1:${candidate.port} ===\n`);
    const p = launch(candidate);
    try {
      await waitReady(p, candidate, readyTimeoutMs);
      l = candidate;
      proc = p;
    } catch (e) {
      lastError = e;
      await kill(p);
      const busy = /address already in use/i.test(tail(logFile, 40));
      if (!busy) break;
    }
  }
  if (proc === undefined || l === undefined) {
    if (ownsDir && process.env.BUCKETFS_KEEP_TEST_DATA !== "1") {
      // The log tail is already in the error message.
      rmSync(dataDir, { recursive: true, force: true });
    }
    ownedDirs.delete(dataDir);
    throw lastError instanceof Error ? lastError : new Error(String(lastError));
  }
  const launched: Launch = l;
  let current: Subprocess | undefined = proc;

  const server: S3Server = {
    endpoint: `${certsDir ? "https" : "http"}://127.0.0.1:${launched.port}`,
    ...(certsDir ? { caFile: join(certsDir, "public.crt") } : {}),
    port: launched.port,
    accessKey,
    secretKey,
    region: "us-east-1",
    dataDir,
    logFile,
    kind,
    get pid(): number | undefined {
      return current?.pid;
    },
    async stop(): Promise<void> {
      if (current !== undefined) {
        await kill(current);
        current = undefined;
      }
      if (ownsDir && process.env.BUCKETFS_KEEP_TEST_DATA !== "1") {
        rmSync(dataDir, { recursive: true, force: true });
      }
      ownedDirs.delete(dataDir);
    },
    async restart(): Promise<void> {
      if (current !== undefined) {
        await kill(current);
        current = undefined;
      }
      if (!existsSync(storageDir)) throw new Error(`restart(): ${storageDir} is gone (stop() was called?)`);
      appendLog(logFile, `\n=== bucketfs test: restarting ${kind} on 127.0.0.1:${launched.port} ===\n`);
      // The old listener may take a moment to release the port.
      const deadline = Date.now() + readyTimeoutMs;
      for (;;) {
        const p = launch(launched);
        try {
          await waitReady(p, launched, Math.max(1000, deadline - Date.now()));
          current = p;
          return;
        } catch (e) {
          await kill(p);
          const busy = /address already in use/i.test(tail(logFile, 20));
          if (!busy || Date.now() >= deadline) throw e;
          await sleep(250);
        }
      }
    },
    async createBucket(name: string): Promise<void> {
      await s3tool(server).mkbucket(name);
    },
  };
  return server;
}
