/**
 * Shipping bucketfs as users run it (issue 4): the single compiled binary and the .deb with
 * its systemd unit.
 *
 *  1. compiled binary (dist/bucketfs from scripts/build-binary.sh): it is the app and not
 *     plain Bun, unstripped, links only glibc; citty subcommands; a missing libfuse3 names
 *     the packages to install and touches nothing; and the same mount/read/upload smoke
 *     test as the source tree (test/helpers/daemon.ts with BUCKETFS_BIN), which also
 *     exercises the execve re-exec, dlopen of libfuse3.so.3 and bun:sqlite.
 *  2. Debian package (dist/bucketfs_<version>_amd64.deb from scripts/build-deb.sh): control
 *     fields, contents and modes; `dpkg -i`; `systemd-analyze verify`; the INSTALLED
 *     /usr/bin/bucketfs started exactly the way the unit starts it (ExecStart arguments,
 *     Environment=, WorkingDirectory=, JOURNAL_STREAM, a fake NOTIFY_SOCKET served by
 *     test/helpers/notify_listener.py) against a real MinIO: READY=1 must arrive only once
 *     the FUSE mount and the workdir bind mount answer, SIGTERM gives STOPPING=1, STATUS=
 *     upload progress with EXTEND_TIMEOUT_USEC, exit 0, uploads verified with boto3; then
 *     upgrade (same .deb again, a rebuilt one with a bumped version), remove (the admin's
 *     bucketfs.conf stays) and purge (nothing left).
 *
 *  3. RPM package (dist/bucketfs-<version>.x86_64.rpm from scripts/build-rpm.sh, built with
 *     Debian's rpmbuild): name, version, arch, dependencies, contents, owners and modes,
 *     %config(noreplace) files, the scriptlets and the unit, all read with `rpm -qp`; the
 *     packaged binary is dist/bucketfs byte for byte. Not installed (this is not an RPM system).
 *
 * The compiled binary's glibc floor (the newest GLIBC_ symbol version it needs) must stay at or
 * below glibc 2.28 (RHEL 8) and be the one the README states.
 *
 * The builds are reused when dist/ is newer than their inputs. The package part needs root,
 * dpkg-deb and systemd-analyze (it is skipped, with the reason in its name, otherwise) and
 * leaves the machine as it found it: the package is purged and every process and mount is
 * gone at the end, also when a test fails. It refuses to run (skips) when a bucketfs
 * package with an admin-written /etc/bucketfs/bucketfs.conf is already installed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync,
  statSync, symlinkSync, writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { configText, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const VERSION: string = JSON.parse(readFileSync(`${REPO}/package.json`, "utf8")).version;
const DIST = `${REPO}/dist`;
const BIN = `${DIST}/bucketfs`;
const DEB = `${DIST}/bucketfs_${VERSION}_amd64.deb`;
const RPM = `${DIST}/bucketfs-${VERSION}.x86_64.rpm`;
/** RHEL 8's glibc: the oldest glibc bucketfs supports (the binary must not need a newer one). */
const GLIBC_CEILING = "2.28";
const UNIT = "/lib/systemd/system/bucketfs.service";
const PY = "/usr/bin/python3";
const LISTENER = `${REPO}/test/helpers/notify_listener.py`;
const SLOW = 300_000;

// ---- small process helpers ----------------------------------------------------------------

interface Run {
  code: number;
  out: string;
  err: string;
}

/** Run argv (never through our own event loop's fs calls into a mount), with a timeout. */
async function run(argv: string[], opts: { timeoutMs?: number; env?: Record<string, string>; cwd?: string } = {}): Promise<Run> {
  const secs = String(Math.ceil((opts.timeoutMs ?? 120_000) / 1000));
  const p = Bun.spawn(["timeout", "-k", "5", secs, ...argv], {
    stdin: "ignore", stdout: "pipe", stderr: "pipe",
    env: opts.env ?? { ...(process.env as Record<string, string>), LC_ALL: "C" },
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code === 124 || code === 137) throw new Error(`timed out: ${argv.join(" ")}\n${out}\n${err}`);
  return { code, out, err };
}

async function ok(argv: string[], opts?: Parameters<typeof run>[1]): Promise<string> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} exited ${r.code}\n${r.out}\n${r.err}`);
  return r.out;
}

const bash = (cmd: string, opts?: Parameters<typeof run>[1]) => run(["bash", "-c", cmd], opts);
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const has = (cmd: string) => spawnSync("bash", ["-c", `command -v ${cmd}`]).status === 0;
const sha256 = (s: string | Uint8Array) => new Bun.CryptoHasher("sha256").update(s).digest("hex");

function mountpoints(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter(Boolean)
    .map((l) => (l.split(" ")[4] ?? "").replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

function lazyUnmountUnder(dir: string): void {
  for (const p of mountpoints().filter((m) => m === dir || m.startsWith(dir + "/")).sort((a, b) => b.length - a.length)) {
    spawnSync("umount", ["-l", p]);
  }
}

/** Newest mtime (ms) of files under `paths` (recursively). */
function newest(paths: string[]): number {
  let t = 0;
  const walk = (p: string) => {
    let st;
    try {
      st = statSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    else t = Math.max(t, st.mtimeMs);
  };
  for (const p of paths) walk(p);
  return t;
}

const mtime = (p: string) => (existsSync(p) ? statSync(p).mtimeMs : 0);

/** Build dist/bucketfs and the .deb unless they are newer than everything they are made from. */
let built: Promise<void> | undefined;
function ensureBuilt(withDeb: boolean): Promise<void> {
  built ??= (async () => {
    const binInputs = [`${REPO}/src`, `${REPO}/package.json`, `${REPO}/package-lock.json`, `${REPO}/scripts/build-binary.sh`];
    if (mtime(BIN) <= newest(binInputs)) await ok(["bash", `${REPO}/scripts/build-binary.sh`], { timeoutMs: 240_000 });
  })();
  if (!withDeb) return built;
  return built.then(async () => {
    const debInputs = [BIN, `${REPO}/debian`, `${REPO}/conf.sample`, `${REPO}/README.md`, `${REPO}/scripts/build-deb.sh`];
    if (mtime(DEB) <= newest(debInputs)) await ok(["bash", `${REPO}/scripts/build-deb.sh`, "--no-build"], { timeoutMs: 240_000 });
  });
}

/** The .rpm from dist/bucketfs, rebuilt when older than its inputs. */
let rpmBuilt: Promise<void> | undefined;
function ensureRpm(): Promise<void> {
  rpmBuilt ??= ensureBuilt(false).then(async () => {
    const inputs = [BIN, `${REPO}/debian`, `${REPO}/conf.sample`, `${REPO}/README.md`, `${REPO}/scripts/build-rpm.sh`];
    if (mtime(RPM) <= newest(inputs)) await ok(["bash", `${REPO}/scripts/build-rpm.sh`, "--no-build"], { timeoutMs: 240_000 });
  });
  return rpmBuilt;
}

/** "2.17" -> [2, 17], for comparing glibc versions. */
const glibcParts = (v: string) => v.split(".").map(Number);
function glibcLess(a: string, b: string): boolean {
  const [x, y] = [glibcParts(a), glibcParts(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) < (y[i] ?? 0);
  return false;
}

/** Parse `Key=value` lines of a unit file (the last one wins, Environment= collected). */
function parseUnit(text: string): { keys: Map<string, string>; env: Record<string, string> } {
  const keys = new Map<string, string>();
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";") || line.startsWith("[")) continue;
    const i = line.indexOf("=");
    const k = line.slice(0, i);
    const v = line.slice(i + 1);
    keys.set(k, v);
    if (k === "Environment") for (const kv of v.split(/\s+/)) env[kv.slice(0, kv.indexOf("="))] = kv.slice(kv.indexOf("=") + 1);
  }
  return { keys, env };
}

let server: S3Server | undefined;
let s3: S3Tool;
async function s3up(): Promise<S3Tool> {
  if (!server) {
    server = await startS3Server();
    s3 = s3tool(server);
  }
  return s3;
}

afterAll(async () => {
  await server?.stop();
}, SLOW);

// ============================================================================================
// 1. The compiled binary
// ============================================================================================

describe("compiled binary dist/bucketfs", () => {
  let dir = "";
  beforeAll(async () => {
    await ensureBuilt(false);
    await s3up();
    mkdirSync(TEST_ROOT, { recursive: true });
    dir = mkdtempSync(join(TEST_ROOT, "bin-"));
  }, SLOW);
  afterAll(() => {
    if (dir) {
      lazyUnmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("is the bucketfs app (not plain Bun), never stripped, links only glibc", async () => {
    expect((await ok([BIN, "--version"])).trim()).toBe(VERSION);
    const sections = await ok(["readelf", "-S", "-W", BIN]);
    expect(sections).toContain(" .bun "); // the embedded app
    expect(sections).toContain(" .symtab "); // not stripped
    const libs = (await ok(["ldd", BIN])).split("\n").map((l) => l.trim().split(" ")[0] ?? "").filter(Boolean);
    for (const l of libs) expect(l).toMatch(/^(linux-vdso\.so\.1|libc\.so\.6|libpthread\.so\.0|libdl\.so\.2|libm\.so\.6|\/lib64\/ld-linux-x86-64\.so\.2)$/);
    expect(libs.some((l) => l.includes("fuse"))).toBe(false); // dlopen()ed when mounting
  });

  test(`glibc floor: the newest GLIBC_ version the binary needs is at most ${GLIBC_CEILING} (RHEL 8) and is the one the README states`, async () => {
    // Version References of every library it links (libc, libpthread, libdl, libm, ld.so).
    const refs = [...(await ok(["objdump", "-p", BIN])).matchAll(/\sGLIBC_(\d+(?:\.\d+)+)\s*$/gm)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThan(3);
    const floor = refs.reduce((a, b) => (glibcLess(a, b) ? b : a));
    expect({ floor, tooNew: glibcLess(GLIBC_CEILING, floor) }).toEqual({ floor, tooNew: false });
    const readme = readFileSync(`${REPO}/README.md`, "utf8");
    expect(readme).toContain(`glibc ${floor} or newer`);
  });

  test("citty commands: --help, check-config, unknown command, missing config", async () => {
    const help = await run([BIN, "--help"]);
    expect(help.code).toBe(0);
    expect(help.out).toContain("--config");
    const conf = join(dir, "check.conf");
    writeFileSync(conf, configText(server!, dir, [{ bucket: "chk-bucket", workdir: "/chk-bucket/wd" }]) + "\n", { mode: 0o600 });
    const c = await run([BIN, "check-config", "--config", conf]);
    expect(c.code).toBe(0);
    expect(c.out).toContain("[chk-bucket]");
    expect(c.out + c.err).not.toContain(server!.secretKey);
    const bad = await run([BIN, "frobnicate"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('unknown command "frobnicate"');
    const missing = await run([BIN, "check-config", "--config", join(dir, "nope.conf")]);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain("config error");
  });

  test("libfuse3 missing: says what to install, exits non-zero, touches nothing", async () => {
    const d = join(dir, "nofuse");
    mkdirSync(d);
    const conf = join(d, "bucketfs.conf");
    writeFileSync(conf, configText(server!, d, [{ bucket: "nofuse-bucket", workdir: "/nofuse-bucket/wd" }]) + "\n", { mode: 0o600 });
    const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" };
    const variants: Array<{ name: string; argv: string[]; env: Record<string, string> }> = [
      { name: "BUCKETFS_LIBFUSE", argv: [BIN, "--config", conf], env: { ...env, BUCKETFS_LIBFUSE: "/nonexistent/libfuse3.so.3" } },
    ];
    // The real library hidden in a private mount namespace (what a machine without libfuse3-3 sees).
    const real = spawnSync("bash", ["-c", "readlink -f \"$(ldconfig -p | awk '/libfuse3\\.so\\.3 /{print $NF; exit}')\""], { encoding: "utf8" }).stdout.trim();
    if (has("unshare") && real && existsSync(real)) {
      variants.push({
        name: "library hidden",
        argv: ["unshare", "-m", "--propagation", "private", "sh", "-c", `mount --bind /dev/null ${q(real)} && exec ${q(BIN)} --config ${q(conf)}`],
        env,
      });
    }
    for (const v of variants) {
      // An empty cwd: Bun falls back to ./libfuse3.so.3 when the system has none.
      const r = await run(v.argv, { env: v.env, cwd: d });
      expect({ variant: v.name, code: r.code }).toEqual({ variant: v.name, code: 1 });
      expect(r.err).toContain("apt-get install fuse3 libfuse3-3");
      expect(r.err).toContain("libfuse3.so.3");
      // Nothing was prepared: no cache dir, no index, no pid file, no mountpoint.
      expect(readdirSync(d).sort()).toEqual(["bucketfs.conf"]);
    }
  });

  test("mount/read/upload smoke with BUCKETFS_BIN=dist/bucketfs (execve re-exec, dlopen, bun:sqlite)", async () => {
    const B = "bin-smoke";
    await s3.mkbucket(B);
    await s3.put(B, "data/hello.txt", { text: "hello from s3\n" });
    await s3.put(B, "wd/in.txt", { text: "prefetched\n" });
    // Streamed and checked by its multipart ETag: MD5s on the hashing Worker, a second entry point of the binary.
    const multi = new Uint8Array(12 * 1024 * 1024).map((_, i) => (i * 7 + (i >> 10)) & 0xff);
    await s3.put(B, "data/multi.bin", { bytes: multi }, { multipart: true, partSize: 5 * 1024 * 1024 });
    const savedBin = process.env.BUCKETFS_BIN;
    const savedPool = process.env.UV_THREADPOOL_SIZE;
    process.env.BUCKETFS_BIN = BIN;
    delete process.env.UV_THREADPOOL_SIZE; // so that the binary has to re-exec itself
    let d: DaemonHandle | undefined;
    try {
      d = await startDaemon(server!, [{ bucket: B, workdir: `/${B}/wd` }], { dir: mkdtempSync(join(dir, "smoke-")) });
    } finally {
      if (savedBin === undefined) delete process.env.BUCKETFS_BIN;
      else process.env.BUCKETFS_BIN = savedBin;
      if (savedPool !== undefined) process.env.UV_THREADPOOL_SIZE = savedPool;
    }
    try {
      const pid = d.proc.pid;
      // Same PID, now running with UV_THREADPOOL_SIZE: the execve(/proc/self/exe) re-exec worked.
      expect(realpathSync(`/proc/${pid}/exe`)).toBe(realpathSync(BIN));
      const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      expect(environ.some((e) => /^UV_THREADPOOL_SIZE=\d+$/.test(e))).toBe(true);
      expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0]).toBe(BIN);
      const M = d.mnt[B] ?? "";
      expect(mountpoints()).toContain(M);
      expect(mountpoints()).toContain(`${M}/wd`);
      expect((await ok(["cat", `${M}/data/hello.txt`])).toString()).toBe("hello from s3\n");
      expect(await ok(["cat", `${M}/wd/in.txt`])).toBe("prefetched\n");
      expect((await ok(["sha256sum", `${M}/data/multi.bin`])).split(" ")[0]).toBe(sha256(multi));
      expect((await ok(["ls", "-A", M])).split("\n").filter(Boolean).sort()).toEqual(["data", "wd"]);
      const erofs = await bash(`echo x > ${q(`${M}/data/new.txt`)}`);
      expect(erofs.code).not.toBe(0);
      expect(erofs.err).toContain("Read-only file system");
      await ok(["bash", "-c", `mkdir -p ${q(`${M}/wd/sub`)} && printf 'out\\n' > ${q(`${M}/wd/sub/out.txt`)} && echo 0 > ${q(`${M}/wd/sub/.exitcode`)}`]);
      // bun:sqlite in the compiled binary: status reads the index of the running daemon.
      const st = await run([BIN, "status", "--config", d.configPath]);
      expect(st.code).toBe(0);
      expect(st.out).toContain(B);
      const code = await d.stop("SIGTERM");
      expect(code).toBe(0);
      expect(d.log()).toContain("stopped cleanly");
      expect(sha256(await s3.getBytes(B, "wd/sub/out.txt"))).toBe(sha256("out\n"));
      // The upload carried a full-object CRC64NVME (aws-crt's N-API file embedded in the binary).
      const held = await s3.checksums(B, "wd/sub/out.txt");
      expect([held.checksumType, held.crc64nvme]).toEqual(["FULL_OBJECT", await s3.crc("crc64nvme", { text: "out\n" })]);
      expect(new TextDecoder().decode(await s3.getBytes(B, "wd/sub/.exitcode"))).toBe("0\n");
      expect(mountpoints().filter((m) => m.startsWith(d!.dir))).toEqual([]);
    } finally {
      await d.cleanup();
    }
  }, SLOW);
});

// ============================================================================================
// 2. The Debian package
// ============================================================================================

function packageSkipReason(): string | undefined {
  if (process.platform !== "linux") return "not Linux";
  if ((process.getuid?.() ?? -1) !== 0) return "needs root (dpkg -i, FUSE mounts)";
  for (const t of ["dpkg", "dpkg-deb", "dpkg-query", "systemd-analyze", "flock"]) if (!has(t)) return `${t} not installed`;
  if (!existsSync("/dev/fuse")) return "no /dev/fuse";
  if (!existsSync(PY)) return `${PY} missing (needed for the NOTIFY_SOCKET listener)`;
  return undefined;
}

/**
 * The package tests change the machine (dpkg -i/-P), so two runs of this file at the same
 * time (two test suites on one machine) must not overlap: a `flock` held by a child process
 * for as long as this file runs. The child holds it until its stdin closes, which also
 * happens when this process dies.
 */
async function machineLock(timeoutS: number): Promise<{ release(): void } | undefined> {
  const path = "/run/lock/bucketfs-package-test.lock";
  const p = Bun.spawn(["flock", "-w", String(timeoutS), path, "sh", "-c", "echo locked; exec cat >/dev/null"], {
    stdin: "pipe", stdout: "pipe", stderr: "ignore",
  });
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  const first = await reader.read();
  reader.releaseLock();
  if (first.done || !new TextDecoder().decode(first.value).startsWith("locked")) return undefined;
  return {
    release() {
      void p.stdin.end();
    },
  };
}

let SKIP = packageSkipReason();
const lock = SKIP === undefined ? await machineLock(900) : undefined;
if (SKIP === undefined && lock === undefined) SKIP = "another run of the package tests held the machine lock for 15 minutes";
if (SKIP === undefined) {
  const st = spawnSync("dpkg-query", ["-W", "-f=${db:Status-Abbrev}", "bucketfs"], { encoding: "utf8" }).stdout.trim();
  if (st && !st.startsWith("un") && existsSync("/etc/bucketfs/bucketfs.conf")) {
    SKIP = "a bucketfs package with an admin-written /etc/bucketfs/bucketfs.conf is installed here; the test would purge it";
  }
}
if (SKIP) {
  lock?.release();
  console.warn(`package.test.ts: Debian package tests skipped: ${SKIP}`);
}

/** Paths named like bucketfs in the places a package touches. */
function footprint(): string[] {
  const r = spawnSync("bash", ["-c",
    "find -H /etc /lib/systemd /usr/lib/systemd /usr/bin /usr/sbin /usr/share/doc /usr/share/lintian /var/log /var/lib/dpkg/info " +
      "-name '*bucketfs*' 2>/dev/null | sort -u"], { encoding: "utf8" });
  return r.stdout.split("\n").filter(Boolean);
}

function pkgStatus(): string {
  const out = spawnSync("dpkg-query", ["-W", "-f=${db:Status-Abbrev}|${Version}", "bucketfs"], { encoding: "utf8" }).stdout;
  return out.split("|").map((s) => s.trim()).join("|").replace(/^\|$/, ""); // "ii|0.1.0", "rc|0.1.0" or ""
}

async function purge(): Promise<void> {
  if (pkgStatus() === "") return;
  await run(["dpkg", "--purge", "bucketfs"], { timeoutMs: 120_000 });
}

interface NotifyEvent {
  event: "listening" | "mounted" | "message";
  t: number;
  path?: string;
  data?: string;
  pid?: number | null;
  mounted?: Record<string, boolean>;
  reads?: Record<string, { ok: boolean; sha256?: string; size?: number; error?: string }>;
}

/** The python NOTIFY_SOCKET listener as a child process, its JSON lines collected. */
function startListener(socket: string, watch: string[], reads: string[]) {
  const argv = [PY, LISTENER, "--socket", socket, ...watch.flatMap((w) => ["--watch", w]), ...reads.flatMap((r) => ["--read", r])];
  const proc = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const events: NotifyEvent[] = [];
  const done = (async () => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      buf += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim()) events.push(JSON.parse(line) as NotifyEvent);
      }
    }
  })();
  return {
    proc,
    events,
    async waitFor(pred: (e: NotifyEvent) => boolean, timeoutMs: number, what: string): Promise<NotifyEvent> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const e = events.find(pred);
        if (e) return e;
        if (proc.exitCode !== null) throw new Error(`notify listener exited (${proc.exitCode}) while waiting for ${what}: ${await new Response(proc.stderr).text()}`);
        if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms; events: ${JSON.stringify(events)}`);
        await Bun.sleep(20);
      }
    },
    async stop(): Promise<void> {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      await proc.exited;
      await done;
    },
  };
}

describe.skipIf(SKIP !== undefined)(`Debian package${SKIP ? ` (skipped: ${SKIP})` : ""}`, () => {
  let dir = "";
  let before: string[] = [];
  const procs = new Set<ReturnType<typeof Bun.spawn>>();
  let usedVarLog = false;

  beforeAll(async () => {
    await ensureBuilt(true);
    await s3up();
    await purge(); // a leftover of an earlier, interrupted run (see packageSkipReason)
    before = footprint();
    mkdirSync(TEST_ROOT, { recursive: true });
    dir = mkdtempSync(join(TEST_ROOT, "pkg-"));
  }, SLOW);

  afterAll(async () => {
    for (const p of procs) {
      if (p.exitCode === null && p.signalCode === null) {
        p.kill("SIGKILL");
        await p.exited;
      }
    }
    if (dir) lazyUnmountUnder(dir);
    await purge();
    if (usedVarLog) rmSync("/var/log/bucketfs.log", { force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
    lock?.release();
  }, SLOW);

  test("the .deb: control fields, contents, owners and modes, conffiles, unstripped binary", async () => {
    const f = (field: string) => spawnSync("dpkg-deb", ["-f", DEB, field], { encoding: "utf8" }).stdout.trim();
    expect(f("Package")).toBe("bucketfs");
    expect(f("Version")).toBe(VERSION);
    expect(f("Architecture")).toBe("amd64");
    const depends = f("Depends").split(/,\s*/);
    expect(depends).toContain("fuse3");
    expect(depends).toContain("libfuse3-3 (>= 3.3) | libfuse3-4");
    const listing = (await ok(["dpkg-deb", "-c", DEB])).split("\n").filter(Boolean).map((l) => {
      const parts = l.split(/\s+/);
      return { mode: parts[0], owner: parts[1], path: (parts[5] ?? "").replace(/^\.\//, "/") };
    });
    const entry = (p: string) => listing.find((e) => e.path === p || e.path === `${p}/`);
    const want: Array<[string, string]> = [
      ["/usr/bin/bucketfs", "-rwxr-xr-x"],
      ["/lib/systemd/system/bucketfs.service", "-rw-r--r--"],
      ["/etc/bucketfs", "drwx------"],
      ["/etc/bucketfs/bucketfs.conf.sample", "-rw-------"],
      ["/etc/logrotate.d/bucketfs", "-rw-r--r--"],
      ["/usr/share/doc/bucketfs/README.md", "-rw-r--r--"],
      ["/usr/share/doc/bucketfs/copyright", "-rw-r--r--"],
      ["/usr/share/doc/bucketfs/changelog.gz", "-rw-r--r--"],
    ];
    for (const [p, mode] of want) expect({ p, mode: entry(p)?.mode, owner: entry(p)?.owner }).toEqual({ p, mode, owner: "root/root" });
    expect(entry("/etc/bucketfs/bucketfs.conf")).toBeUndefined(); // the admin writes it
    for (const e of listing) expect(e.owner).toBe("root/root");
    const ctl = join(dir, "control");
    await ok(["dpkg-deb", "-e", DEB, ctl]);
    expect(readFileSync(join(ctl, "conffiles"), "utf8").split("\n").filter(Boolean).sort()).toEqual([
      "/etc/bucketfs/bucketfs.conf.sample",
      "/etc/logrotate.d/bucketfs",
    ]);
    for (const s of ["postinst", "prerm", "postrm"]) expect(statSync(join(ctl, s)).mode & 0o777).toBe(0o755);
    // The packaged binary is dist/bucketfs byte for byte (never stripped on the way).
    const inDeb = await ok(["bash", "-c", `dpkg-deb --fsys-tarfile ${q(DEB)} | tar -xO ./usr/bin/bucketfs | sha256sum`], { timeoutMs: 180_000 });
    const dist = await ok(["sha256sum", BIN]);
    expect(inDeb.split(" ")[0]).toBe(dist.split(" ")[0] ?? "x");
    expect(readFileSync(join(ctl, "control"), "utf8")).toMatch(/^Installed-Size: \d+$/m);
  }, SLOW);

  test("dpkg -i installs it: files, owners, modes, systemd-analyze verify, logrotate", async () => {
    let r = await run(["dpkg", "-i", DEB], { timeoutMs: 240_000 });
    if (r.code !== 0) {
      // Missing dependencies: what the README tells users to do.
      await ok(["apt-get", "-f", "install", "-y", "-q"], { timeoutMs: 600_000, env: { ...(process.env as Record<string, string>), DEBIAN_FRONTEND: "noninteractive" } });
      r = await run(["dpkg", "-i", DEB], { timeoutMs: 240_000 });
    }
    expect(r.code).toBe(0);
    expect(pkgStatus()).toBe(`ii|${VERSION}`);
    const want: Array<[string, number]> = [
      ["/usr/bin/bucketfs", 0o100755],
      [UNIT, 0o100644],
      ["/etc/bucketfs", 0o040700],
      ["/etc/bucketfs/bucketfs.conf.sample", 0o100600],
      ["/etc/logrotate.d/bucketfs", 0o100644],
      ["/usr/share/doc/bucketfs/README.md", 0o100644],
      ["/usr/share/doc/bucketfs/copyright", 0o100644],
    ];
    for (const [p, mode] of want) {
      const st = statSync(p);
      expect({ p, mode: st.mode.toString(8), uid: st.uid, gid: st.gid }).toEqual({ p, mode: mode.toString(8), uid: 0, gid: 0 });
    }
    expect(existsSync("/etc/bucketfs/bucketfs.conf")).toBe(false);
    expect(readFileSync("/etc/bucketfs/bucketfs.conf.sample", "utf8")).toBe(readFileSync(`${REPO}/conf.sample`, "utf8"));
    expect((await ok(["/usr/bin/bucketfs", "--version"])).trim()).toBe(VERSION);
    await ok(["cmp", "/usr/bin/bucketfs", BIN]);
    expect((await run(["dpkg", "--verify", "bucketfs"])).out).toBe(""); // md5sums match
    // The installed package's dependencies are what the README promises.
    const dep = spawnSync("dpkg-query", ["-W", "-f=${Depends}", "bucketfs"], { encoding: "utf8" }).stdout;
    expect(dep).toContain("fuse3");
    expect(dep).toContain("libfuse3-3 (>= 3.3) | libfuse3-4");
    const v = await run(["systemd-analyze", "verify", UNIT]);
    expect({ code: v.code, out: (v.out + v.err).split("\n").filter((l) => l.includes("bucketfs")) }).toEqual({ code: 0, out: [] });
    const { keys } = parseUnit(readFileSync(UNIT, "utf8"));
    expect(keys.get("Type")).toBe("notify");
    expect(keys.get("NotifyAccess")).toBe("main");
    expect(keys.get("ExecStart")).toBe("/usr/bin/bucketfs --config /etc/bucketfs/bucketfs.conf");
    expect(keys.get("KillSignal")).toBe("SIGTERM");
    expect(keys.get("Restart")).toBe("on-failure");
    expect(keys.get("TimeoutStopSec")).toBe("30min");
    for (const k of ["PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateDevices", "MountFlags", "CapabilityBoundingSet", "User"]) {
      expect({ k, v: keys.get(k) }).toEqual({ k, v: undefined });
    }
    if (has("logrotate")) {
      const lr = await run(["logrotate", "-d", "/etc/logrotate.d/bucketfs"]);
      expect(lr.code).toBe(0);
    }
    expect(readFileSync("/etc/logrotate.d/bucketfs", "utf8")).not.toMatch(/^\s*(postrotate|copytruncate)/m);
  }, SLOW);

  test("installed /usr/bin/bucketfs run like the unit: READY=1 only once mounted and readable; SIGTERM -> STOPPING=1, exit 0, uploaded", async () => {
    const B = "pkg-unit";
    const OUTSIDE = "data/reads/hello.txt";
    const INSIDE = "work/in.txt";
    await s3.mkbucket(B);
    const OUTSIDE_TEXT = "read me through the mount\n";
    const INSIDE_TEXT = "prefetched before READY\n";
    await s3.put(B, OUTSIDE, { text: OUTSIDE_TEXT });
    await s3.put(B, INSIDE, { text: INSIDE_TEXT });
    // 3 MiB of prefetched data, so there is something between mount and READY.
    await s3.putMany(B, { prefix: "work/bulk/", count: 24, size: 128 * 1024 });

    const d = mkdtempSync(join(dir, "unit-"));
    const conf = join(d, "bucketfs.conf");
    writeFileSync(conf, configText(server!, d, [{ bucket: B, workdir: `/${B}/work` }]) + "\n", { mode: 0o600 });
    const M = `${d}/mnt/${B}`;
    const { keys, env: unitEnv } = parseUnit(readFileSync(UNIT, "utf8"));
    const exec = (keys.get("ExecStart") ?? "").split(/\s+/);
    expect(exec).toEqual(["/usr/bin/bucketfs", "--config", "/etc/bucketfs/bucketfs.conf"]);
    const argv = exec.map((a) => (a === "/etc/bucketfs/bucketfs.conf" ? conf : a));
    expect(unitEnv.UV_THREADPOOL_SIZE).toBe("32");
    const logFile = unitEnv.BUCKETFS_LOG_FILE ?? "";
    expect(logFile).toBe("/var/log/bucketfs.log");
    // Use the unit's real log file when nothing is there yet (purge must then remove it).
    const useLog = existsSync(logFile) ? join(d, "bucketfs.log") : logFile;
    usedVarLog = useLog === logFile;

    const socket = join(d, "notify.sock");
    const listener = startListener(socket, [M, `${M}/work`], [`${M}/${OUTSIDE}`, `${M}/${INSIDE}`]);
    procs.add(listener.proc);
    await listener.waitFor((e) => e.event === "listening", 10_000, "listener start");

    // The environment systemd gives a system service (no HOME, PATH, the unit's Environment=).
    const env: Record<string, string> = {
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      LANG: "C.UTF-8",
      INVOCATION_ID: randomBytes(16).toString("hex"),
      JOURNAL_STREAM: "8:424242",
      NOTIFY_SOCKET: socket,
      ...unitEnv,
      BUCKETFS_LOG_FILE: useLog,
    };
    const stderrFile = join(d, "journal.txt");
    const daemon = Bun.spawn(argv, {
      cwd: keys.get("WorkingDirectory") ?? "/",
      env,
      stdin: "ignore",
      stdout: Bun.file(stderrFile),
      stderr: Bun.file(stderrFile),
    });
    procs.add(daemon);
    const journal = () => (existsSync(stderrFile) ? readFileSync(stderrFile, "utf8") : "");
    try {
      const isReady = (e: NotifyEvent) => e.event === "message" && (e.data ?? "").split("\n").includes("READY=1");
      let ready: NotifyEvent;
      try {
        ready = await listener.waitFor(isReady, 120_000, "READY=1");
      } catch (err) {
        throw new Error(`${(err as Error).message}\n--- daemon output:\n${journal()}`);
      }
      // At the moment READY=1 arrived both mounts were there, and files read correctly.
      expect(ready.mounted).toEqual({ [M]: true, [`${M}/work`]: true });
      expect(ready.reads?.[`${M}/${OUTSIDE}`]).toEqual({ ok: true, size: OUTSIDE_TEXT.length, sha256: sha256(OUTSIDE_TEXT) });
      expect(ready.reads?.[`${M}/${INSIDE}`]).toEqual({ ok: true, size: INSIDE_TEXT.length, sha256: sha256(INSIDE_TEXT) });
      // ... and no READY=1 before the mounts existed: they were seen before READY, by the poller.
      const mountedAt = (p: string) => listener.events.find((e) => e.event === "mounted" && e.path === p)?.t ?? Infinity;
      expect(mountedAt(M)).toBeLessThanOrEqual(ready.t);
      expect(mountedAt(`${M}/work`)).toBeLessThanOrEqual(ready.t);
      const beforeReady = listener.events.filter((e) => e.event === "message" && e.t < ready.t);
      for (const e of beforeReady) expect(e.data ?? "").not.toContain("READY=1");
      // NotifyAccess=main: every message comes from the main PID itself.
      expect(ready.pid).toBe(daemon.pid);
      expect(journal()).toMatch(/^<6>\[daemon\] ready: /m);

      // Work in the workdir through the mount, as a pipeline would.
      await ok(["bash", "-c", [
        `mkdir -p ${q(`${M}/work/task1`)}`,
        `head -c 3000000 /dev/urandom > ${q(`${M}/work/task1/out.bin`)}`,
        `printf 'result\\n' > ${q(`${M}/work/task1/result.txt`)}`,
        `echo 0 > ${q(`${M}/work/task1/.exitcode`)}`,
      ].join(" && ")]);
      const outSha = (await ok(["sha256sum", `${M}/work/task1/out.bin`])).split(" ")[0];

      daemon.kill("SIGTERM");
      const code = await Promise.race([daemon.exited, Bun.sleep(180_000).then(() => "timeout" as const)]);
      expect({ code, journal: code === 0 ? "" : journal() }).toEqual({ code: 0, journal: "" });
      await Bun.sleep(200); // let the listener drain the socket
      await listener.stop();

      const msgs = listener.events.filter((e) => e.event === "message");
      expect(msgs.filter(isReady).length).toBe(1);
      const stoppingIdx = msgs.findIndex((e) => (e.data ?? "").split("\n").includes("STOPPING=1"));
      expect(stoppingIdx).toBeGreaterThan(msgs.findIndex(isReady));
      const progress = msgs.slice(stoppingIdx).filter((e) => /STATUS=.*uploading/.test(e.data ?? ""));
      expect(progress.length).toBeGreaterThan(0);
      for (const e of progress) expect(e.data ?? "").toMatch(/^EXTEND_TIMEOUT_USEC=\d+$/m);
      for (const e of msgs) expect(e.pid).toBe(daemon.pid);

      // Uploaded, marker included, and nothing left mounted.
      const got = await s3.get(B, "work/task1/out.bin");
      expect(got.sha256).toBe(outSha ?? "x");
      expect(new TextDecoder().decode(await s3.getBytes(B, "work/task1/result.txt"))).toBe("result\n");
      expect(new TextDecoder().decode(await s3.getBytes(B, "work/task1/.exitcode"))).toBe("0\n");
      expect((await s3.head(B, "work/task1/result.txt"))?.metadata.mtime).toMatch(/^\d+\.\d{9}$/);
      expect(mountpoints().filter((m) => m === M || m.startsWith(M + "/"))).toEqual([]);

      // Logs: journal lines carry <N> priorities, the log file timestamps; never the secret.
      const j = journal();
      for (const l of j.split("\n").filter(Boolean)) expect(l).toMatch(/^<[0-7]>/);
      expect(j).toContain("stopped cleanly");
      const file = readFileSync(useLog, "utf8");
      expect(file).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z INFO  \[daemon\] ready: /m);
      expect(file).toContain("stopped cleanly");
      expect(j + file).not.toContain(server!.secretKey);
      expect(statSync(useLog).mode & 0o777).toBe(0o640);
    } finally {
      if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill("SIGKILL");
      await daemon.exited;
      await listener.stop();
      lazyUnmountUnder(d);
    }
  }, SLOW);

  test("upgrade: the same .deb again, then a rebuilt one with a bumped version; the admin's config is kept (made 0600)", async () => {
    expect(pkgStatus()).toBe(`ii|${VERSION}`);
    const adminConf = "/etc/bucketfs/bucketfs.conf";
    const confText = configText(server!, join(dir, "admin"), [{ bucket: "admin-bucket" }]) + "\n";
    writeFileSync(adminConf, confText);
    chmodSync(adminConf, 0o644); // too open: postinst makes it private
    const r1 = await run(["dpkg", "-i", DEB], { timeoutMs: 240_000 });
    expect(r1.code).toBe(0);
    expect(pkgStatus()).toBe(`ii|${VERSION}`);
    expect(statSync(adminConf).mode & 0o777).toBe(0o600);
    expect(readFileSync(adminConf, "utf8")).toBe(confText);

    // A rebuilt package with a bumped version, made from a temp copy of this one.
    const tree = join(dir, "bumped");
    await ok(["dpkg-deb", "-R", DEB, tree], { timeoutMs: 120_000 });
    const bumped = `${VERSION}+upgradetest1`;
    const ctl = join(tree, "DEBIAN", "control");
    writeFileSync(ctl, readFileSync(ctl, "utf8").replace(/^Version: .*$/m, `Version: ${bumped}`));
    const bumpedDeb = join(dir, `bucketfs_${bumped}_amd64.deb`);
    await ok(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", tree, bumpedDeb], { timeoutMs: 180_000 });
    rmSync(tree, { recursive: true, force: true });
    const r2 = await run(["dpkg", "-i", bumpedDeb], { timeoutMs: 240_000 });
    expect({ code: r2.code, err: r2.code ? r2.err : "" }).toEqual({ code: 0, err: "" });
    expect(pkgStatus()).toBe(`ii|${bumped}`);
    expect(readFileSync(adminConf, "utf8")).toBe(confText);
    expect(statSync(adminConf).mode & 0o777).toBe(0o600);
    expect(existsSync("/etc/bucketfs/bucketfs.conf.sample")).toBe(true);
    expect((await ok(["/usr/bin/bucketfs", "--version"])).trim()).toBe(VERSION);
    expect((await run(["dpkg", "--verify", "bucketfs"])).out).toBe("");
    expect((await run(["dpkg", "--audit"])).out).toBe("");
    rmSync(bumpedDeb, { force: true });
  }, SLOW);

  test("remove keeps only the admin's config and the conffiles; purge leaves nothing behind", async () => {
    // `systemctl enable` without a running systemd may refuse; make the link it would make.
    const wants = "/etc/systemd/system/multi-user.target.wants/bucketfs.service";
    if ((await run(["systemctl", "enable", "bucketfs.service"])).code !== 0 || !existsSync(wants)) {
      mkdirSync("/etc/systemd/system/multi-user.target.wants", { recursive: true });
      if (!existsSync(wants)) symlinkSync(UNIT, wants);
    }
    expect(readlinkSync(wants)).toContain("bucketfs.service");
    if (!existsSync("/var/log/bucketfs.log")) {
      writeFileSync("/var/log/bucketfs.log", "x\n");
      usedVarLog = true;
    }
    writeFileSync("/var/log/bucketfs.log.1.gz", ""); // as logrotate leaves them

    const rm = await run(["dpkg", "-r", "bucketfs"], { timeoutMs: 120_000 });
    expect(rm.code).toBe(0);
    expect(pkgStatus()).toMatch(/^rc\|/);
    for (const p of ["/usr/bin/bucketfs", UNIT, "/usr/share/doc/bucketfs/README.md"]) expect({ p, exists: existsSync(p) }).toEqual({ p, exists: false });
    for (const p of ["/etc/bucketfs/bucketfs.conf", "/etc/bucketfs/bucketfs.conf.sample", "/etc/logrotate.d/bucketfs"]) {
      expect({ p, exists: existsSync(p) }).toEqual({ p, exists: true });
    }

    const pg = await run(["dpkg", "--purge", "bucketfs"], { timeoutMs: 120_000 });
    expect(pg.code).toBe(0);
    expect(pkgStatus()).toBe("");
    for (const p of ["/etc/bucketfs", "/etc/logrotate.d/bucketfs", "/var/log/bucketfs.log", "/var/log/bucketfs.log.1.gz"]) {
      expect({ p, exists: existsSync(p) }).toEqual({ p, exists: false });
    }
    let linkLeft = true;
    try {
      readlinkSync(wants);
    } catch {
      linkLeft = false;
    }
    expect(linkLeft).toBe(false);
    expect(pg.err).toContain("cache directories");
    expect(footprint()).toEqual(before);
    usedVarLog = false;
  }, SLOW);
});

// ============================================================================================
// 3. The RPM package (read with rpm -qp; not installed)
// ============================================================================================

const RPM_SKIP = !has("rpmbuild") ? "rpmbuild not installed (apt-get install rpm)" : !has("rpm") ? "rpm not installed" : undefined;

describe.skipIf(RPM_SKIP !== undefined)(`RPM package${RPM_SKIP ? ` (skipped: ${RPM_SKIP})` : ""}`, () => {
  beforeAll(async () => {
    await ensureRpm();
  }, SLOW);

  const qp = async (...args: string[]) => ok(["rpm", "-qp", ...args, RPM]);

  test("name, version, arch; requires fuse3 and fuse3-libs and nothing the binary does not need", async () => {
    expect((await qp("--qf", "%{NAME}|%{VERSION}|%{ARCH}|%{LICENSE}")).trim()).toBe(`bucketfs|${VERSION}|x86_64|Apache-2.0`);
    const requires = (await qp("--requires")).split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("rpmlib("));
    expect([...new Set(requires)].sort()).toEqual(["/bin/sh", "fuse3", "fuse3-libs"]);
  });

  test("the .deb's files at RHEL paths, root-owned with the .deb's modes; config files %config(noreplace); the binary unstripped and identical", async () => {
    const rows = (await qp("--qf", "[%{FILENAMES}|%{FILEMODES:perms}|%{FILEUSERNAME}:%{FILEGROUPNAME}|%{FILEFLAGS:fflags}|%{FILEDIGESTS}\n]"))
      .split("\n").filter(Boolean).map((l) => {
        const [path, mode, owner, flags, digest] = l.split("|");
        return { path: path!, mode, owner, flags, digest };
      });
    const byPath = new Map(rows.map((r) => [r.path, r]));
    const want: Array<[string, string, string]> = [
      ["/usr/bin/bucketfs", "-rwxr-xr-x", ""],
      ["/usr/lib/systemd/system/bucketfs.service", "-rw-r--r--", ""],
      ["/etc/bucketfs", "drwx------", ""],
      ["/etc/bucketfs/bucketfs.conf.sample", "-rw-------", "cn"],
      ["/etc/logrotate.d/bucketfs", "-rw-r--r--", "cn"],
      ["/usr/share/doc/bucketfs", "drwxr-xr-x", ""],
      ["/usr/share/doc/bucketfs/README.md", "-rw-r--r--", "d"],
      ["/usr/share/doc/bucketfs/copyright", "-rw-r--r--", "dl"],
    ];
    expect(rows.map((r) => r.path).sort()).toEqual(want.map((w) => w[0]).sort());
    for (const [path, mode, flags] of want) {
      const r = byPath.get(path);
      expect({ path, mode: r?.mode, owner: r?.owner, flags: r?.flags }).toEqual({ path, mode, owner: "root:root", flags });
    }
    expect(byPath.has("/etc/bucketfs/bucketfs.conf")).toBe(false); // the admin writes it
    // Packaged as built: digests of dist/bucketfs and the sources (never stripped on the way).
    const digest = async (p: string) => (await ok(["sha256sum", p])).split(" ")[0];
    expect(byPath.get("/usr/bin/bucketfs")?.digest).toBe(await digest(BIN));
    expect(byPath.get("/usr/lib/systemd/system/bucketfs.service")?.digest).toBe(await digest(`${REPO}/debian/bucketfs.service`));
    expect(byPath.get("/etc/bucketfs/bucketfs.conf.sample")?.digest).toBe(await digest(`${REPO}/conf.sample`));
    expect(byPath.get("/etc/logrotate.d/bucketfs")?.digest).toBe(await digest(`${REPO}/debian/bucketfs.logrotate`));
    expect((await qp("--configfiles")).split("\n").filter(Boolean).sort()).toEqual(["/etc/bucketfs/bucketfs.conf.sample", "/etc/logrotate.d/bucketfs"]);
  });

  test("scriptlets: post makes /etc/bucketfs private and reloads systemd; erase stops (uploads) and disables; upgrade restarts nothing", async () => {
    const scripts = await qp("--scripts");
    // `rpm -qp --scripts`: "<name> scriptlet (using /bin/sh):" headers, each followed by its body.
    const bodies = new Map<string, string>();
    let current = "";
    for (const line of scripts.split("\n")) {
      const h = /^(\w+) scriptlet \(using \/bin\/sh\):$/.exec(line);
      if (h) bodies.set((current = h[1]!), "");
      else if (current) bodies.set(current, `${bodies.get(current)}${line}\n`);
    }
    const part = (name: string) => bodies.get(name) ?? "";
    const post = part("postinstall");
    const preun = part("preuninstall");
    const postun = part("postuninstall");
    for (const [name, body] of [["post", post], ["preun", preun], ["postun", postun]] as const) {
      expect({ name, empty: body.trim() === "" }).toEqual({ name, empty: false });
      const sh = spawnSync("sh", ["-n"], { input: body, encoding: "utf8" });
      expect({ name, code: sh.status, err: sh.stderr }).toEqual({ name, code: 0, err: "" });
    }
    expect(post).toContain("chmod 0700 /etc/bucketfs");
    expect(post).toContain("chmod go-rwx /etc/bucketfs/bucketfs.conf");
    expect(post).toContain("daemon-reload");
    expect(preun).toMatch(/if \[ "\$1" -eq 0 \].*\n[\s\S]*systemctl stop bucketfs\.service/);
    expect(preun).toContain("systemctl --no-reload disable bucketfs.service");
    expect(postun).toContain("daemon-reload");
    expect(scripts).not.toMatch(/systemctl (try-)?restart/);
    expect([...bodies.keys()].sort()).toEqual(["postinstall", "postuninstall", "preuninstall"]);
    expect(await qp("--qf", "%{DESCRIPTION}")).toContain("libfuse 3.3");
  });
});
