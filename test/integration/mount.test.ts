/**
 * End-to-end tests of the read-only bucket mount (issue 2): the real `bucketfs` daemon
 * (test/helpers/daemon.ts runs `bun src/cli/main.ts` as a child process) mounts buckets of a
 * REAL S3 server on loopback (MinIO from test/helpers/s3server.ts), whose objects are put and
 * checked with the independent boto3 client (test/helpers/s3tool.ts), never with bucketfs code.
 *
 * Covers: listing (names, sizes, mtimes, dir markers, implied prefixes, lookups of paths never
 * listed), content byte for byte (empty, small, nested, 100 MiB), lazy download (nothing
 * fetched before open, once after), 8 concurrent cold readers sharing one download, EROFS for
 * every write op outside the workdir, hostile keys (served through a loopback proxy that makes
 * MinIO's listings look like AWS S3's, since MinIO refuses to store most of them), the
 * writable workdir, lifecycle (pid file, SIGTERM, two buckets in one process, stale mount
 * cleanup) and bad configs.
 *
 * Every access to a mount runs in a child process (bash + coreutils, with `timeout`) or via
 * async fs, so a hung mount fails a test instead of wedging the runner. Every daemon is
 * stopped and its mounts detached in afterAll and in try/finally.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { createServer, request, type IncomingHttpHeaders, type Server } from "node:http";
import { join } from "node:path";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, S3ToolError, type S3Tool } from "../helpers/s3tool.ts";
import { bucketfsCommand, daemonDir, removeDir, startDaemon, type BucketSpec, type DaemonHandle } from "../helpers/daemon.ts";

const MiB = 1024 * 1024;
const HOOK = { timeout: 240_000 };

let server: S3Server;
let s3: S3Tool;
let scratch: string;
/** Daemons started by this file and not yet shut down (safety net for afterAll). */
const handles = new Set<DaemonHandle>();

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
  mkdirSync(TEST_ROOT, { recursive: true });
  scratch = mkdtempSync(join(TEST_ROOT, "mount-it-"));
}, HOOK);

afterAll(async () => {
  for (const h of [...handles]) await shutdown(h);
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, HOOK);

// ---- helpers ------------------------------------------------------------------------------

interface RunResult {
  code: number;
  out: string;
  err: string;
}

/**
 * Run argv in a child process under coreutils `timeout` (which signals the whole process
 * group, so a `cat` stuck on a mount dies too). Never blocks the test's event loop.
 */
async function runArgv(argv: string[], timeoutMs = 60_000, env?: Record<string, string>): Promise<RunResult> {
  const secs = String(Math.ceil(timeoutMs / 1000));
  const p = Bun.spawn(["timeout", "-k", "5", secs, ...argv], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...(env ?? (process.env as Record<string, string>)), LC_ALL: "C" },
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code === 124 || code === 137) throw new Error(`timed out after ${timeoutMs} ms: ${argv.join(" ")}\n${err}`);
  return { code, out, err };
}

/** Run a bash command line (see runArgv). */
function run(cmd: string, timeoutMs = 60_000): Promise<RunResult> {
  return runArgv(["bash", "-c", cmd], timeoutMs);
}

/** `run`, and fail with its stderr unless it exits 0; returns stdout. */
async function ok(cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await run(cmd, timeoutMs);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}): ${cmd}\n${r.err}`);
  return r.out;
}

/** Single-quote for bash. */
const q = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

const lines = (s: string): string[] => s.split("\n").filter((l) => l !== "");

async function start(buckets: BucketSpec[], opts: Parameters<typeof startDaemon>[2] = {}): Promise<DaemonHandle> {
  const h = await startDaemon(server, buckets, opts);
  handles.add(h);
  return h;
}

/** SIGTERM (SIGKILL if that fails), detach leftovers, remove the daemon's dir. Never throws. */
/** One daemon serving `bucket` for the enclosing describe block: started in beforeAll, stopped in afterAll. */
function daemonForBlock(bucket: string): { d: DaemonHandle | undefined; M: string } {
  const one: { d: DaemonHandle | undefined; M: string } = { d: undefined, M: "" };
  beforeAll(async () => {
    one.d = await start([{ bucket }]);
    one.M = one.d.mnt[bucket] ?? "";
  }, HOOK);
  afterAll(() => shutdown(one.d), HOOK);
  return one;
}

async function shutdown(h: DaemonHandle | undefined): Promise<number | undefined> {
  if (!h) return undefined;
  let code: number | undefined;
  try {
    code = await h.stop("SIGTERM", 60_000);
  } catch {
    /* stop() already cleaned up */
  }
  await h.cleanup();
  if (process.env.BUCKETFS_TEST_VERBOSE === "1") process.stderr.write(`--- daemon log ${h.logFile} ---\n${h.log()}\n`);
  removeDir(h.dir);
  handles.delete(h);
  return code;
}

/** FUSE and bind mounts at or below `dir`, from /proc/mounts (procfs: safe to read synchronously). */
function mountsUnder(dir: string): { mountpoint: string; fstype: string }[] {
  return lines(readFileSync("/proc/mounts", "utf8"))
    .map((l) => l.split(" "))
    .map((f) => ({ mountpoint: (f[1] ?? "").replace(/\\040/g, " "), fstype: f[2] ?? "" }))
    .filter((m) => m.mountpoint === dir || m.mountpoint.startsWith(dir + "/"));
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** How many times the daemon's debug log says it downloaded `key`. */
function fetchedCount(h: DaemonHandle, key: string): number {
  return (h.log().match(new RegExp(`\\bfetched ${escapeRe(key)} \\(`, "g")) ?? []).length;
}

/** Cache file of an object: `<cachePath>/.<bucket>/<key>`. */
const cacheFile = (h: DaemonHandle, bucket: string, key: string): string => `${h.cachePath}/.${bucket}/${key}`;

/** A file of `size` truly random bytes (no repeated blocks, so a read at a wrong offset shows). */
function writeRandomFile(path: string, size: number): string {
  const hash = new Bun.CryptoHasher("sha256");
  const fd = openSync(path, "w");
  try {
    for (let left = size; left > 0; ) {
      const chunk = randomBytes(Math.min(left, 4 * MiB));
      writeSync(fd, chunk);
      hash.update(chunk);
      left -= chunk.length;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

const sha256 = (data: Uint8Array | string): string => new Bun.CryptoHasher("sha256").update(data).digest("hex");

interface StatLine {
  type: string;
  size: number;
  mtime: number;
  perm: string;
}

/** `stat` each path (relative to `root`) in one child process. */
async function statAll(root: string, rels: string[]): Promise<Record<string, StatLine>> {
  const out = await ok(`cd ${q(root)} && stat -c '%n|%F|%s|%Y|%a' ${rels.map(q).join(" ")}`);
  const res: Record<string, StatLine> = {};
  for (const l of lines(out)) {
    const [name, type, size, mtime, perm] = l.split("|");
    res[name ?? ""] = { type: type ?? "", size: Number(size), mtime: Number(mtime), perm: perm ?? "" };
  }
  return res;
}

/** `ls -A` of a directory, one name per line (a child process). */
async function ls(dir: string): Promise<string[]> {
  return lines(await ok(`ls -A1 ${q(dir)}`));
}

// ---- 1. listing -----------------------------------------------------------------------------

describe("listing: names, sizes and mtimes match S3", () => {
  const B = "ls-bucket";
  const objects: Record<string, string> = {
    "root.txt": "hello from the root\n",
    "a/b/c.txt": "nested three levels down\n",
    "d/": "", // a directory marker with nothing under it
    "p/q/r.bin": "x".repeat(1000), // p and p/q exist only as implied prefixes
    "e/": "", // a marker that also has content below it
    "e/f.txt": "under a marker\n",
  };

  beforeAll(async () => {
    await s3.mkbucket(B);
    for (const [k, v] of Object.entries(objects)) await s3.put(B, k, { text: v });
  }, HOOK);

  describe("after readdir", () => {
    const one = daemonForBlock(B);

    test("readdir names match the S3 listing at every level", async () => {
      const top = await s3.list(B, { recursive: false });
      const fromS3 = [
        ...top.objects.map((o) => o.key),
        ...top.prefixes.map((p) => p.slice(0, -1)),
      ].sort();
      expect(fromS3).toEqual(["a", "d", "e", "p", "root.txt"]);
      expect(await ls(one.M)).toEqual(fromS3);
      expect(await ls(`${one.M}/a`)).toEqual(["b"]);
      expect(await ls(`${one.M}/a/b`)).toEqual(["c.txt"]);
      expect(await ls(`${one.M}/d`)).toEqual([]); // marker only: an empty directory
      expect(await ls(`${one.M}/e`)).toEqual(["f.txt"]); // the marker itself is not an entry
      expect(await ls(`${one.M}/p`)).toEqual(["q"]);
      expect(await ls(`${one.M}/p/q`)).toEqual(["r.bin"]);
      // The same through async readdir (no child process), with entry types.
      const ents = await readdir(one.M, { withFileTypes: true });
      expect(ents.map((e) => `${e.name}:${e.isDirectory() ? "dir" : e.isFile() ? "file" : "?"}`).sort()).toEqual([
        "a:dir", "d:dir", "e:dir", "p:dir", "root.txt:file",
      ]);
    });

    test("stat: exact sizes, mtime = LastModified to the second, read-only modes, dirs are dirs", async () => {
      const listed = (await s3.list(B)).objects.filter((o) => !o.key.endsWith("/"));
      expect(listed.map((o) => o.key).sort()).toEqual(["a/b/c.txt", "e/f.txt", "p/q/r.bin", "root.txt"]);
      const st = await statAll(one.M, [...listed.map((o) => o.key), "a", "a/b", "d", "e", "p", "p/q"]);
      for (const o of listed) {
        const s = st[o.key];
        const head = await s3.head(B, o.key);
        expect({ key: o.key, type: s?.type, size: s?.size, mtime: s?.mtime, perm: s?.perm }).toEqual({
          key: o.key,
          type: "regular file",
          size: Buffer.byteLength(objects[o.key] ?? ""),
          mtime: Math.floor(o.lastModifiedMs / 1000),
          perm: "444",
        });
        expect(s?.size).toBe(o.size);
        expect(s?.mtime).toBe(Math.floor((head?.lastModifiedMs ?? 0) / 1000));
      }
      for (const dir of ["a", "a/b", "d", "e", "p", "p/q"]) {
        expect({ dir, type: st[dir]?.type, perm: st[dir]?.perm }).toEqual({ dir, type: "directory", perm: "555" });
      }
      // `ls -l` shows the same sizes (readdirplus path).
      const ll = await ok(`ls -ln ${q(one.M)}`);
      expect(ll).toMatch(new RegExp(`^-r--r--r-- +1 +\\d+ +\\d+ +${Buffer.byteLength(objects["root.txt"] ?? "")} .* root\\.txt$`, "m"));
      expect(await ok(`stat -f -c '%l' ${q(one.M)}`)).toBe("255\n"); // statfs answers, NAME_MAX 255
    });
  });

  describe("lookup of paths never listed (fresh daemon, HEAD / prefix probe)", () => {
    const one = daemonForBlock(B);

    test("stat of a deep path is the first operation and works; absent paths are ENOENT", async () => {
      // Nothing was listed yet: the daemon's index has no entries.
      const head = await s3.head(B, "a/b/c.txt");
      const first = await ok(`stat -c '%F|%s|%Y' ${q(`${one.M}/a/b/c.txt`)}`);
      expect(first).toBe(`regular file|${head?.size}|${Math.floor((head?.lastModifiedMs ?? 0) / 1000)}\n`);
      expect(await ok(`stat -c '%F' ${q(`${one.M}/p/q`)} ${q(`${one.M}/d`)} ${q(`${one.M}/e`)}`)).toBe(
        "directory\ndirectory\ndirectory\n",
      );
      for (const absent of ["a/b/nope.txt", "zzz", "zzz/deep/x.txt", "a/b/c.txt/below", "root.tx"]) {
        const r = await run(`stat ${q(`${one.M}/${absent}`)}`);
        expect({ absent, code: r.code }).toEqual({ absent, code: 1 });
        expect(r.err).toMatch(absent.startsWith("a/b/c.txt/") ? /Not a directory/ : /No such file or directory/);
      }
      // The file found by lookup alone also reads correctly.
      expect(await ok(`cat ${q(`${one.M}/a/b/c.txt`)}`)).toBe(objects["a/b/c.txt"] ?? "");
      expect(one.d?.proc.exitCode).toBeNull();
    });
  });
});

// ---- 2. content -------------------------------------------------------------------------------

describe("content matches S3 byte for byte", () => {
  const B = "content";
  const BIG = 100 * MiB;
  const local: Record<string, string> = {};
  const shas: Record<string, string> = {};
  let d: DaemonHandle | undefined;
  let M = "";

  beforeAll(async () => {
    await s3.mkbucket(B);
    const dir = join(scratch, "content");
    mkdirSync(dir, { recursive: true });
    const files: Record<string, Uint8Array | number> = {
      "small.txt": new TextEncoder().encode("small object, ünïcödé, tabs\tand\nnewlines\n"),
      empty: new Uint8Array(0),
      "n1/n2/n3/nested.bin": randomBytes(MiB + 3),
      "big/random-100m.bin": BIG,
    };
    for (const [key, body] of Object.entries(files)) {
      const p = join(dir, key.replaceAll("/", "_"));
      local[key] = p;
      if (typeof body === "number") shas[key] = writeRandomFile(p, body);
      else {
        writeFileSync(p, body);
        shas[key] = sha256(body);
      }
      const put = await s3.put(B, key, { file: p }, typeof body === "number" ? { multipart: true, partSize: 16 * MiB } : {});
      expect(put.sha256).toBe(shas[key] ?? "");
    }
    d = await start([{ bucket: B }]);
    M = d.mnt[B] ?? "";
  }, HOOK);
  afterAll(() => shutdown(d), HOOK);

  test("small, empty and nested objects are identical (cmp and async readFile)", async () => {
    for (const key of ["small.txt", "empty", "n1/n2/n3/nested.bin"]) {
      const r = await run(`cmp ${q(local[key] ?? "")} ${q(`${M}/${key}`)}`);
      expect({ key, code: r.code, err: r.err }).toEqual({ key, code: 0, err: "" });
      const bytes = await readFile(`${M}/${key}`);
      expect(sha256(bytes)).toBe(shas[key] ?? "");
    }
    expect(await ok(`wc -c < ${q(`${M}/empty`)}`)).toBe("0\n");
    expect(await ok(`stat -c '%F|%s' ${q(`${M}/empty`)}`)).toBe("regular empty file|0\n");
  });

  test("100 MiB random object: reads at odd offsets while cold, then sha256 and cmp match", async () => {
    const key = "big/random-100m.bin";
    const path = `${M}/${key}`;
    expect(await ok(`stat -c %s ${q(path)}`)).toBe(`${BIG}\n`);
    // Unaligned ranges first, while nothing is cached: one past EOF (short read), one in the middle.
    const whole = readFileSync(local[key] ?? "");
    for (const [off, len] of [[BIG - 10, 100], [12_345_677, 70_001], [0, 1]] as const) {
      const got = await ok(`tail -c +${off + 1} ${q(path)} | head -c ${len} | sha256sum`);
      expect({ off, sha: got.split(" ")[0] }).toEqual({ off, sha: sha256(whole.subarray(off, off + len)) });
    }
    const out = await ok(`sha256sum ${q(path)}`, 180_000);
    expect(out.split(" ")[0]).toBe(shas[key] ?? "");
    expect((await s3.get(B, key)).sha256).toBe(shas[key] ?? "");
    expect((await run(`cmp ${q(local[key] ?? "")} ${q(path)}`, 180_000)).code).toBe(0);
  });
});

// ---- 3. lazy download -------------------------------------------------------------------------

describe("lazy download: nothing before open, once after", () => {
  const B = "lazy-bucket";
  const ONE = "docs/one.txt";
  const TWO = "docs/two.bin";
  const oneText = "downloaded only when opened\n".repeat(100);
  let twoSha = "";
  let d: DaemonHandle | undefined;
  let M = "";

  beforeAll(async () => {
    await s3.mkbucket(B);
    await s3.put(B, ONE, { text: oneText });
    twoSha = (await s3.put(B, TWO, { bytes: randomBytes(2 * MiB) })).sha256;
    d = await start([{ bucket: B }]);
    M = d.mnt[B] ?? "";
  }, HOOK);
  afterAll(() => shutdown(d), HOOK);

  test("ls -l and stat show real sizes but download nothing", async () => {
    const ll = await ok(`ls -ln ${q(`${M}/docs`)}`);
    expect(ll).toMatch(new RegExp(` ${Buffer.byteLength(oneText)} .* one\\.txt$`, "m"));
    expect(ll).toMatch(new RegExp(` ${2 * MiB} .* two\\.bin$`, "m"));
    await ok(`stat ${q(`${M}/${ONE}`)} ${q(`${M}/${TWO}`)}`);
    if (!d) throw new Error("no daemon");
    expect(existsSync(cacheFile(d, B, ONE))).toBe(false);
    expect(existsSync(cacheFile(d, B, TWO))).toBe(false);
    expect(fetchedCount(d, ONE) + fetchedCount(d, TWO)).toBe(0);
  });

  test("the first read downloads into <cachePath>/.<bucket>/<key>, with the same content", async () => {
    if (!d) throw new Error("no daemon");
    expect(await ok(`cat ${q(`${M}/${ONE}`)}`)).toBe(oneText);
    expect(readFileSync(cacheFile(d, B, ONE), "utf8")).toBe(oneText);
    expect(fetchedCount(d, ONE)).toBe(1);
    // Only what was opened is downloaded.
    expect(existsSync(cacheFile(d, B, TWO))).toBe(false);
    expect(fetchedCount(d, TWO)).toBe(0);
  });

  test("later reads (new opens, page cache dropped) are served from the cache: no second download", async () => {
    if (!d) throw new Error("no daemon");
    const drop = await run("sync; echo 3 > /proc/sys/vm/drop_caches");
    expect(await ok(`cat ${q(`${M}/${ONE}`)}`)).toBe(oneText);
    expect(await ok(`md5sum < ${q(`${M}/${ONE}`)}`)).toBe(await ok(`md5sum < ${q(cacheFile(d, B, ONE))}`));
    expect(fetchedCount(d, ONE)).toBe(1);
    // The other object: downloaded once by its first reader, then never again.
    expect((await ok(`sha256sum ${q(`${M}/${TWO}`)}`)).split(" ")[0]).toBe(twoSha);
    expect((await ok(`sha256sum ${q(`${M}/${TWO}`)}`)).split(" ")[0]).toBe(twoSha);
    expect(fetchedCount(d, TWO)).toBe(1);
    if (drop.code !== 0) console.warn(`note: could not drop the page cache (${drop.err.trim()}); reads were still new opens`);
  });
});

// ---- 4. concurrency ---------------------------------------------------------------------------

describe("concurrent cold readers share one download", () => {
  const B = "conc-bucket";
  const KEY = "cold/big64.bin";
  const SIZE = 64 * MiB;
  let sha = "";
  let d: DaemonHandle | undefined;
  let M = "";

  beforeAll(async () => {
    await s3.mkbucket(B);
    const p = join(scratch, "big64.bin");
    sha = writeRandomFile(p, SIZE);
    expect((await s3.put(B, KEY, { file: p }, { multipart: true, partSize: 16 * MiB })).sha256).toBe(sha);
    rmSync(p);
    d = await start([{ bucket: B }]);
    M = d.mnt[B] ?? "";
  }, HOOK);
  afterAll(() => shutdown(d), HOOK);

  test("8 sha256sum processes started at once all get the right hash; the log shows one fetch", async () => {
    if (!d) throw new Error("no daemon");
    expect(existsSync(cacheFile(d, B, KEY))).toBe(false);
    expect(fetchedCount(d, KEY)).toBe(0);
    // Meanwhile a 9th process keeps opening the file (open + close, no fork) until the readers are
    // done: no open may fail while the download completes (regression: ENOENT in that window).
    const stopFile = join(scratch, "conc-stop");
    const f = q(`${M}/${KEY}`);
    const hammer = run(
      `n=0; bad=0; while [ ! -e ${q(stopFile)} ]; do n=$((n+1)); true < ${f} 2>> ${q(`${stopFile}.err`)} || bad=$((bad+1)); done; echo "$n $bad"`,
      180_000,
    );
    const readers = Array.from({ length: 8 }, () => runArgv(["sha256sum", `${M}/${KEY}`], 180_000));
    const allStartedMs = Date.now();
    const results = await Promise.all(readers);
    await Bun.sleep(300);
    writeFileSync(stopFile, "");
    const [opens, failedOpens] = (await hammer).out.trim().split(" ").map(Number);
    const errs = existsSync(`${stopFile}.err`) ? readFileSync(`${stopFile}.err`, "utf8") : "";
    expect({ failedOpens, errs: errs.split("\n").slice(0, 3) }).toEqual({ failedOpens: 0, errs: [""] });
    expect(opens).toBeGreaterThan(10);
    for (const r of results) {
      expect(r.code).toBe(0);
      expect(r.out.split(" ")[0]).toBe(sha);
    }
    expect(fetchedCount(d, KEY)).toBe(1);
    // The readers really overlapped: all 8 were started before the one download finished
    // (the log line is written when it completes).
    const doneAt = /^(\S+) .*\bfetched /m.exec(d.log())?.[1] ?? "";
    expect(Date.parse(doneAt)).toBeGreaterThan(allStartedMs);
    expect(statSync(cacheFile(d, B, KEY)).size).toBe(SIZE);
    // No temp files left next to it.
    expect(readdirSync(`${d.cachePath}/.${B}/cold`)).toEqual(["big64.bin"]);
  });
});

// ---- 5. EROFS outside the workdir ---------------------------------------------------------

describe("every write operation outside the workdir fails with EROFS", () => {
  const B = "rofs-bucket";
  const original = "must stay unchanged\n";
  let d: DaemonHandle | undefined;
  let M = "";

  beforeAll(async () => {
    await s3.mkbucket(B);
    await s3.put(B, "existing.txt", { text: original });
    await s3.put(B, "sub/inner.txt", { text: "inner\n" });
    await s3.put(B, "emptydir/", { text: "" });
    d = await start([{ bucket: B }]);
    M = d.mnt[B] ?? "";
  }, HOOK);
  afterAll(() => shutdown(d), HOOK);

  test("create, write, truncate, mkdir, rmdir, unlink, rename, chmod, chown, utimens, symlink, link, mknod, setxattr", async () => {
    const f = q(`${M}/existing.txt`);
    const setfattr = (await run("command -v setfattr")).code === 0;
    const setxattrCmd = setfattr
      ? `setfattr -n user.test -v 1 ${f}`
      : // setfattr (package attr) is not installed here: the same syscall through python3.
        `/usr/bin/python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.test", b"1")' ${f}`;
    const ops: Record<string, string> = {
      "create new file": `echo data > ${q(`${M}/new.txt`)}`,
      "create new file in subdir": `: > ${q(`${M}/sub/new.txt`)}`,
      "open existing for write (append)": `echo more >> ${f}`,
      "open existing read-write": `exec 3<> ${f}`,
      "open existing O_TRUNC": `: > ${f}`,
      truncate: `truncate -s 0 ${f}`,
      mkdir: `mkdir ${q(`${M}/newdir`)}`,
      "mkdir in subdir": `mkdir ${q(`${M}/sub/newdir`)}`,
      rmdir: `rmdir ${q(`${M}/emptydir`)}`,
      unlink: `rm -f ${f}`,
      "rename file": `mv -T ${f} ${q(`${M}/renamed.txt`)}`,
      "rename dir": `mv -T ${q(`${M}/sub`)} ${q(`${M}/sub2`)}`,
      chmod: `chmod 600 ${f}`,
      chown: `chown 1:1 ${f}`,
      "utimens (touch existing)": `touch ${f}`,
      "utimens (touch -d)": `touch -d 2001-01-01 ${f}`,
      symlink: `ln -s existing.txt ${q(`${M}/sym`)}`,
      link: `ln ${f} ${q(`${M}/hard`)}`,
      "mknod (fifo)": `mkfifo ${q(`${M}/fifo`)}`,
      setxattr: setxattrCmd,
    };
    const outcome: Record<string, string> = {};
    const expected: Record<string, string> = {};
    for (const [name, cmd] of Object.entries(ops)) {
      const r = await run(cmd);
      outcome[name] = r.code !== 0 && r.err.includes("Read-only file system") ? "EROFS" : `exit ${r.code}: ${r.err.trim()}`;
      expected[name] = "EROFS";
    }
    expect(outcome).toEqual(expected);
    if (!setfattr) console.warn("note: setfattr is not installed; setxattr was checked with python3 os.setxattr");

    // Nothing changed, locally or in S3.
    expect(await ls(M)).toEqual(["emptydir", "existing.txt", "sub"]);
    expect(await ls(`${M}/sub`)).toEqual(["inner.txt"]);
    expect(await ok(`cat ${f}`)).toBe(original);
    expect(await ok(`stat -c %a ${f}`)).toBe("444\n");
    expect((await s3.list(B)).objects.map((o) => o.key)).toEqual(["emptydir/", "existing.txt", "sub/inner.txt"]);
    expect(d?.proc.exitCode).toBeNull();
  });
});

// ---- 6. hostile keys --------------------------------------------------------------------------

const LONG = "n".repeat(300);
/** Each hostile key, and the one log line bucketfs must write for it. */
const HOSTILE: Record<string, RegExp> = {
  "../escape.txt": /skipping prefix "\.\.\/" in hostile-bucket/,
  "a/../../x": /skipping prefix "a\/\.\.\/" in hostile-bucket/,
  "a//b": /skipping prefix "a\/\/" in hostile-bucket/,
  "./dot": /skipping prefix "\.\/" in hostile-bucket/,
  "a/./b": /skipping prefix "a\/\.\/" in hostile-bucket/,
  [LONG]: new RegExp(`skipping key "${LONG}" in hostile-bucket: a name longer than 255 bytes`),
  "/lead": /skipping prefix "\/" in hostile-bucket/,
  // With "dup" also a file, "dup/child" makes "dup" a key and a prefix at once.
  "dup/child": /key "dup" in hostile-bucket is also a prefix; shown as a directory/,
};

function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

interface HostileProxy {
  endpoint: string;
  /** "METHOD /bucket/key?query" of every request, path URL-decoded. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * A loopback HTTP proxy in front of the real S3 server that forwards every request unchanged
 * (Host header kept, so SigV4 signatures stay valid) and adds `inject` keys to ListObjectsV2
 * answers, computed as S3 would (prefix, delimiter, common prefixes). MinIO refuses to store
 * `..`, `.`, `//` and >255-byte names and hides `dup/child` next to `dup` from listings; AWS S3
 * stores and lists all of them, and this makes bucketfs see what AWS would show it.
 */
async function startHostileProxy(target: S3Server, bucket: string, inject: string[]): Promise<HostileProxy> {
  const requests: string[] = [];
  const srv: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    requests.push(`${req.method} ${decodeURIComponent(url.pathname)}${url.search}`);
    const isList =
      req.method === "GET" &&
      url.searchParams.get("list-type") === "2" &&
      url.pathname.replace(/\/$/, "") === `/${bucket}` &&
      !url.searchParams.has("continuation-token");
    const headers: IncomingHttpHeaders = { ...req.headers };
    const up = request(
      { host: "127.0.0.1", port: target.port, method: req.method, path: req.url, headers },
      (ures) => {
        if (!isList || ures.statusCode !== 200) {
          res.writeHead(ures.statusCode ?? 502, ures.headers);
          ures.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        ures.on("data", (c: Buffer) => chunks.push(c));
        ures.on("end", () => {
          let body = Buffer.concat(chunks).toString("utf8");
          const prefix = url.searchParams.get("prefix") ?? "";
          const delim = url.searchParams.get("delimiter") ?? "";
          const urlEnc = url.searchParams.get("encoding-type") === "url";
          const enc = (k: string) => xmlEscape(urlEnc ? encodeURIComponent(k).replaceAll("%2F", "/") : k);
          const contents: string[] = [];
          const cps = new Set<string>();
          for (const key of inject) {
            if (!key.startsWith(prefix)) continue;
            const rest = key.slice(prefix.length);
            const at = delim ? rest.indexOf(delim) : -1;
            if (at >= 0) cps.add(prefix + rest.slice(0, at + delim.length));
            else contents.push(key);
          }
          let added = "";
          let n = 0;
          for (const k of contents) {
            if (body.includes(`<Key>${enc(k)}</Key>`)) continue;
            added +=
              `<Contents><Key>${enc(k)}</Key><LastModified>2024-01-02T03:04:05.000Z</LastModified>` +
              `<ETag>&#34;0123456789abcdef0123456789abcdef&#34;</ETag><Size>6</Size><StorageClass>STANDARD</StorageClass></Contents>`;
            n++;
          }
          for (const p of cps) {
            if (body.includes(`<Prefix>${enc(p)}</Prefix></CommonPrefixes>`)) continue;
            added += `<CommonPrefixes><Prefix>${enc(p)}</Prefix></CommonPrefixes>`;
            n++;
          }
          body = body.replace("</ListBucketResult>", `${added}</ListBucketResult>`);
          body = body.replace(/<KeyCount>(\d+)<\/KeyCount>/, (_m, c: string) => `<KeyCount>${Number(c) + n}</KeyCount>`);
          const out = Buffer.from(body, "utf8");
          const h = { ...ures.headers };
          delete h["transfer-encoding"];
          h["content-length"] = String(out.length);
          res.writeHead(200, h);
          res.end(out);
        });
      },
    );
    up.on("error", (err) => {
      res.writeHead(502);
      res.end(String(err));
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const addr = srv.address();
  if (addr === null || typeof addr === "string") throw new Error("proxy: no port");
  return {
    endpoint: `http://127.0.0.1:${addr.port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

/** Segments of a safe key: none empty, ".", ".." or over 255 bytes. */
const safeKey = (k: string): boolean =>
  k.split("/").every((s) => s !== "" && s !== "." && s !== ".." && Buffer.byteLength(s) <= 255);

describe("hostile keys: skipped or shown safely, never a crash or a write outside the cache", () => {
  // In this block the proxy runs in the test process: every mount access must be async.
  const B = "hostile-bucket";
  let proxy: HostileProxy | undefined;
  let d: DaemonHandle | undefined;
  let M = "";
  const refused: string[] = [];
  const accepted: string[] = [];

  beforeAll(async () => {
    await s3.mkbucket(B);
    await s3.put(B, "safe.txt", { text: "safe\n" });
    await s3.put(B, "a/ok.txt", { text: "ok\n" });
    await s3.put(B, "dup", { text: "file\n" });
    for (const key of Object.keys(HOSTILE)) {
      try {
        await s3.put(B, key, { text: "PWNED\n" });
        accepted.push(key);
      } catch (err) {
        if (!(err instanceof S3ToolError)) throw err;
        refused.push(key);
      }
    }
    console.warn(
      `note: ${server.kind} refused to store ${refused.length} hostile key(s) (${refused.map((k) => JSON.stringify(k.slice(0, 20))).join(", ")}); ` +
        `accepted ${accepted.map((k) => JSON.stringify(k.slice(0, 20))).join(", ") || "none"}. ` +
        "The proxy adds every hostile key to its listings verbatim, as AWS S3 would list them.",
    );
    proxy = await startHostileProxy(server, B, Object.keys(HOSTILE));
    // metadata_ttl 0: every readdir lists again, so "one log line per key" is really tested.
    d = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: B, extra: { metadata_ttl: "0" } }]);
    handles.add(d);
    M = d.mnt[B] ?? "";
  }, HOOK);
  afterAll(async () => {
    await shutdown(d);
    await proxy?.close();
  }, HOOK);

  test("the server keeps dup and dup/child apart; the proxy lists the hostile keys", async () => {
    expect(accepted).toContain("dup/child");
    expect((await s3.getBytes(B, "dup/child")).length).toBe(6);
    const viaProxy = await s3tool({ ...server, endpoint: proxy?.endpoint ?? "" }).list(B, { recursive: false });
    expect(viaProxy.prefixes).toEqual(expect.arrayContaining(["../", "./", "/", "a/", "dup/"]));
    expect(viaProxy.objects.map((o) => o.key)).toEqual(expect.arrayContaining([LONG, "dup", "safe.txt"]));
  });

  test("the tree shows only safe names; dup is a directory with its child", async () => {
    for (let pass = 0; pass < 2; pass++) {
      const r = await run(`cd ${q(M)} && find . -mindepth 1 -printf '%y %P\\n' | sort`);
      expect(r.code).toBe(0);
      const seen = lines(r.out);
      for (const l of seen) {
        const path = l.slice(2);
        expect(safeKey(path)).toBe(true);
      }
      // What AWS would list, minus every unsafe key, with "dup" a directory.
      const keys = new Set([...(await s3.list(B)).objects.map((o) => o.key), ...Object.keys(HOSTILE)]);
      const want = new Map<string, string>();
      for (const k of keys) {
        if (!safeKey(k)) continue;
        const segs = k.split("/");
        for (let i = 1; i < segs.length; i++) want.set(segs.slice(0, i).join("/"), "d");
        if (!want.has(k)) want.set(k, "f");
      }
      expect(seen).toEqual([...want].map(([p, t]) => `${t} ${p}`).sort());
      expect(seen).toContain("d dup");
      expect(seen).toContain("f dup/child");
    }
    expect(await ok(`cat ${q(`${M}/dup/child`)}`)).toBe("PWNED\n");
    expect(await ok(`stat -c %F ${q(`${M}/dup`)}`)).toBe("directory\n");
    // A 300-byte name cannot even be looked up.
    const long = await run(`stat ${q(`${M}/${LONG}`)}`);
    expect(long.code).toBe(1);
    expect(long.err).toContain("File name too long");
  });

  test("one log line per skipped key, however often it is listed; the daemon is alive", async () => {
    await ok(`ls -laR ${q(M)} > /dev/null`);
    const log = d?.log() ?? "";
    const counts: Record<string, number> = {};
    const want: Record<string, number> = {};
    for (const [key, re] of Object.entries(HOSTILE)) {
      const k = key.length > 40 ? `${key.slice(0, 10)}…(${key.length} bytes)` : key;
      counts[k] = lines(log).filter((l) => re.test(l)).length;
      want[k] = 1;
    }
    expect(counts).toEqual(want);
    expect(d?.proc.exitCode).toBeNull();
    expect(log).not.toMatch(/\b(ERROR|unhandled|uncaught)\b/i);
    expect(await ok(`cat ${q(`${M}/safe.txt`)}`)).toBe("safe\n");
  });

  test("nothing is fetched for a hostile key and nothing is written outside the cache root", async () => {
    const hostileFetch = (proxy?.requests ?? []).filter((r) => {
      if (!/^(GET|HEAD) /.test(r)) return false;
      const path = r.slice(r.indexOf(" ") + 1).split("?")[0] ?? "";
      const key = path.slice(`/${B}/`.length);
      return path.startsWith(`/${B}/`) && key !== "" && !safeKey(key);
    });
    expect(hostileFetch).toEqual([]);
    if (!d) throw new Error("no daemon");
    const cacheRoot = `${d.cachePath}/.${B}`;
    const bad: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (p === join(d?.dir ?? "", "mnt")) continue; // the mount itself
        if (["escape.txt", "x", "dot", "lead"].includes(e.name) && !p.startsWith(cacheRoot + "/")) bad.push(p);
        if (e.name === "escape.txt" || e.name === LONG) bad.push(p); // never anywhere, not even in the cache
        if (e.isDirectory()) walk(p);
      }
    };
    walk(d.dir);
    walk(scratch);
    expect(bad).toEqual([]);
    expect(existsSync(join(TEST_ROOT, "escape.txt"))).toBe(false);
    expect(existsSync("/tmp/escape.txt")).toBe(false);
  });
});

// ---- 7. workdir -------------------------------------------------------------------------------

describe("workdir: writable inside, EROFS outside", () => {
  const B = "wd-bucket";
  let d: DaemonHandle | undefined;
  let M = "";

  beforeAll(async () => {
    await s3.mkbucket(B);
    await s3.put(B, "readme.txt", { text: "outside the workdir\n" });
    // Nothing at all under work/.
    d = await start([{ bucket: B, workdir: `/${B}/work` }]);
    M = d.mnt[B] ?? "";
  }, HOOK);
  afterAll(() => shutdown(d), HOOK);

  test("the workdir exists (bind mount) even with no object under its prefix", async () => {
    // Only bucketfs' own lease (work/.bucketfs/, see many-nodes.test.ts), no workdir object.
    expect((await s3.list(B, { prefix: "work/" })).objects.map((o) => o.key)).toEqual(["work/.bucketfs/lease"]);
    expect(await ok(`stat -c '%F' ${q(`${M}/work`)}`)).toBe("directory\n");
    expect(await ls(M)).toEqual(["readme.txt", "work"]);
    expect(await ls(`${M}/work`)).toEqual([]);
    expect(mountsUnder(M).map((m) => m.mountpoint)).toContain(`${M}/work`);
  });

  test("create, write, mkdir, rename, symlink, chmod, unlink, rmdir all work inside it", async () => {
    const W = `${M}/work`;
    const steps = [
      `echo hello > ${q(`${W}/f.txt`)}`,
      `echo more >> ${q(`${W}/f.txt`)}`,
      `mkdir -p ${q(`${W}/sub/deeper`)}`,
      `mv ${q(`${W}/f.txt`)} ${q(`${W}/sub/g.txt`)}`,
      `ln -s sub/g.txt ${q(`${W}/link`)}`,
      `chmod 600 ${q(`${W}/sub/g.txt`)}`,
      `touch ${q(`${W}/tmp`)} && rm ${q(`${W}/tmp`)}`,
      `rmdir ${q(`${W}/sub/deeper`)}`,
      `truncate -s 3 ${q(`${W}/sub/g.txt`)} && echo lo >> ${q(`${W}/sub/g.txt`)}`,
      `touch -d 2001-02-03 ${q(`${W}/sub/g.txt`)}`,
    ];
    for (const s of steps) await ok(s);
    expect(await ok(`cat ${q(`${W}/link`)}`)).toBe("hello\n");
    expect(await ok(`readlink ${q(`${W}/link`)}`)).toBe("sub/g.txt\n");
    expect(await ok(`stat -c '%a %y' ${q(`${W}/sub/g.txt`)}`)).toMatch(/^600 2001-02-03 /);
    expect(await ls(W)).toEqual(["link", "sub"]);
    expect(await ls(`${W}/sub`)).toEqual(["g.txt"]);
  });

  test("writing directly at the mount root (or next to the workdir) fails with EROFS", async () => {
    for (const cmd of [
      `echo x > ${q(`${M}/new.txt`)}`,
      `mkdir ${q(`${M}/work2`)}`,
      `touch ${q(`${M}/readme.txt`)}`,
      `mv ${q(`${M}/readme.txt`)} ${q(`${M}/moved.txt`)}`,
      `rmdir ${q(`${M}/work`)}`,
    ]) {
      const r = await run(cmd);
      expect({ cmd, code: r.code !== 0, erofs: /Read-only file system|Device or resource busy/.test(r.err) }).toEqual({
        cmd,
        code: true,
        erofs: true,
      });
    }
    expect(await ls(M)).toEqual(["readme.txt", "work"]);
  });

  test("SIGTERM uploads the workdir's regular files and exits 0", async () => {
    if (!d) throw new Error("no daemon");
    const h = d;
    const code = await h.stop("SIGTERM");
    expect(code).toBe(0);
    expect(mountsUnder(h.dir)).toEqual([]);
    const keys = (await s3.list(B)).objects.map((o) => o.key).filter((k) => !k.startsWith("work/.bucketfs/"));
    expect(keys).toEqual(["readme.txt", "work/sub/g.txt"]); // the symlink is not uploaded (its target is in the commit record)
    expect(new TextDecoder().decode(await s3.getBytes(B, "work/sub/g.txt"))).toBe("hello\n");
  });
});

// ---- 8. lifecycle -----------------------------------------------------------------------------

describe("lifecycle", () => {
  const B1 = "life-one";
  const B2 = "life-two";

  beforeAll(async () => {
    await s3.mkbucket(B1);
    await s3.mkbucket(B2);
    await s3.put(B1, "one.txt", { text: "bucket one\n" });
    await s3.put(B2, "two.txt", { text: "bucket two\n" });
  }, HOOK);

  test("pid file holds the daemon pid while running; SIGTERM exits 0, unmounts, removes it", async () => {
    const d = await start([{ bucket: B1 }]);
    try {
      const pidFile = `${d.cachePath}/.${B1}.pid`;
      expect(readFileSync(pidFile, "utf8").trim()).toBe(String(d.proc.pid));
      expect(mountsUnder(d.dir)).toEqual([{ mountpoint: d.mnt[B1] ?? "", fstype: "fuse.bucketfs" }]);
      expect(await ok(`cat ${q(`${d.mnt[B1]}/one.txt`)}`)).toBe("bucket one\n");
      expect(await d.stop("SIGTERM")).toBe(0);
      expect(mountsUnder(d.dir)).toEqual([]);
      expect(existsSync(pidFile)).toBe(false);
      expect(d.log()).toMatch(/stopped cleanly/);
    } finally {
      await shutdown(d);
    }
  });

  test("two buckets in one config are both mounted by one process", async () => {
    const d = await start([{ bucket: B1 }, { bucket: B2 }]);
    try {
      const pid = String(d.proc.pid);
      expect(mountsUnder(d.dir).sort((a, b) => a.mountpoint.localeCompare(b.mountpoint))).toEqual([
        { mountpoint: d.mnt[B1] ?? "", fstype: "fuse.bucketfs" },
        { mountpoint: d.mnt[B2] ?? "", fstype: "fuse.bucketfs" },
      ]);
      expect(readFileSync(`${d.cachePath}/.${B1}.pid`, "utf8").trim()).toBe(pid);
      expect(readFileSync(`${d.cachePath}/.${B2}.pid`, "utf8").trim()).toBe(pid);
      const fuseFds = readdirSync(`/proc/${pid}/fd`).filter((fd) => {
        try {
          return Bun.spawnSync(["readlink", `/proc/${pid}/fd/${fd}`]).stdout.toString().trim() === "/dev/fuse";
        } catch {
          return false;
        }
      });
      expect(fuseFds.length).toBeGreaterThanOrEqual(2);
      expect(await ok(`cat ${q(`${d.mnt[B1]}/one.txt`)} ${q(`${d.mnt[B2]}/two.txt`)}`)).toBe("bucket one\nbucket two\n");
      expect(await d.stop("SIGTERM")).toBe(0);
      expect(mountsUnder(d.dir)).toEqual([]);
      expect(existsSync(`${d.cachePath}/.${B1}.pid`)).toBe(false);
      expect(existsSync(`${d.cachePath}/.${B2}.pid`)).toBe(false);
    } finally {
      await shutdown(d);
    }
  });

  test("a stale mount left by a SIGKILLed daemon is cleaned by the next start", async () => {
    const dir = daemonDir("stale");
    let first: DaemonHandle | undefined;
    let second: DaemonHandle | undefined;
    try {
      first = await start([{ bucket: B1 }], { dir });
      const M = first.mnt[B1] ?? "";
      expect(await ok(`cat ${q(`${M}/one.txt`)}`)).toBe("bucket one\n");
      // Kill it without the helper's stop(): that would also detach the mount we want left behind.
      first.proc.kill("SIGKILL");
      await first.proc.exited;
      expect(mountsUnder(dir)).toEqual([{ mountpoint: M, fstype: "fuse.bucketfs" }]);
      const dead = await run(`stat ${q(M)}`);
      expect(dead.code).toBe(1);
      expect(dead.err).toContain("Transport endpoint is not connected");

      second = await start([{ bucket: B1 }], { dir });
      expect(second.log()).toMatch(/cleaning stale mount at/);
      expect(mountsUnder(dir)).toEqual([{ mountpoint: M, fstype: "fuse.bucketfs" }]);
      expect(await ok(`cat ${q(`${M}/one.txt`)}`)).toBe("bucket one\n");
      expect(readFileSync(`${second.cachePath}/.${B1}.pid`, "utf8").trim()).toBe(String(second.proc.pid));
      expect(await second.stop("SIGTERM")).toBe(0);
      expect(mountsUnder(dir)).toEqual([]);
    } finally {
      // The live one first: the dead one's cleanup lazily unmounts everything under dir.
      await shutdown(second);
      await shutdown(first);
      removeDir(dir);
    }
  });
});

// ---- 9. bad configs ---------------------------------------------------------------------------

describe("bad configs: clear error, non-zero exit, nothing mounted, no secret printed", () => {
  const SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";
  let dir = "";

  beforeAll(() => {
    dir = join(scratch, "configs");
    mkdirSync(dir, { recursive: true });
  });

  /** A section; `mnt`/`cache` under the case's own dir so "nothing touched" can be checked. */
  const section = (caseDir: string, body: string[]): string =>
    [
      "[cfg-bucket]",
      ...body,
      "aws_access_key_id = AKIAEXAMPLEKEYID0001",
      `aws_secret_access_key = ${SECRET}`,
      "region = us-east-1",
      "endpoint = http://127.0.0.1:9", // discard port: never contacted
      `mountpoint = ${caseDir}/mnt`,
      `cachepath = ${caseDir}/cache`,
    ].join("\n") + "\n";

  interface Case {
    text: (caseDir: string) => string;
    /** Regexps the error message must match (file, line, key, problem). */
    want: (file: string) => RegExp[];
  }
  const cases: Record<string, Case> = {
    "unknown key": {
      text: (c) => section(c, ["bucket = cfg-bucket", "colour = blue"]),
      want: (f) => [new RegExp(`${escapeRe(f)}:3: key "colour": unknown key in section \\[cfg-bucket\\]`)],
    },
    "missing bucket": {
      text: (c) => section(c, []),
      want: (f) => [new RegExp(`${escapeRe(f)}:1: section \\[cfg-bucket\\]: missing required key "bucket"`)],
    },
    "malformed line (holding the secret)": {
      text: (c) => section(c, ["bucket = cfg-bucket", `aws_secret_access_key ${SECRET}`]),
      want: (f) => [new RegExp(`${escapeRe(f)}:3: not a comment, \\[section\\] or key = value line`)],
    },
    "malformed section header": {
      text: (c) => `# comment\n${section(c, ["bucket = cfg-bucket"]).replace("[cfg-bucket]", "[cfg-bucket")}`,
      want: (f) => [new RegExp(`${escapeRe(f)}:2: section header must look like \\[name\\]`)],
    },
    "invalid bucket name": {
      text: (c) => section(c, ["bucket = Bad_Bucket"]),
      want: (f) => [new RegExp(`${escapeRe(f)}:2: key "bucket": "Bad_Bucket" is not a valid S3 bucket name`)],
    },
  };

  for (const [name, c] of Object.entries(cases)) {
    test(`${name}: both the daemon and check-config refuse it`, async () => {
      const caseDir = join(dir, name.replace(/\W+/g, "-"));
      mkdirSync(caseDir, { recursive: true });
      const file = join(caseDir, "bucketfs.conf");
      writeFileSync(file, c.text(caseDir), { mode: 0o600 });
      for (const argv of [
        [...bucketfsCommand(), "--config", file],
        [...bucketfsCommand(), "check-config", "--config", file],
      ]) {
        const r = await runArgv(argv, 30_000);
        const all = r.out + r.err;
        expect({ argv: argv.slice(-3).join(" "), code: r.code }).toEqual({ argv: argv.slice(-3).join(" "), code: 1 });
        for (const re of c.want(file)) expect(r.err).toMatch(re);
        expect(r.err).toMatch(/^bucketfs: config error: /m);
        expect(all).not.toContain(SECRET);
        expect(all).not.toContain(SECRET.slice(0, 16));
        expect(mountsUnder(caseDir)).toEqual([]);
        expect(existsSync(join(caseDir, "mnt"))).toBe(false);
        expect(existsSync(join(caseDir, "cache"))).toBe(false);
      }
    });
  }

  test("missing config file: non-zero, names the file", async () => {
    const file = join(dir, "does-not-exist", "bucketfs.conf");
    for (const argv of [
      [...bucketfsCommand(), "--config", file],
      [...bucketfsCommand(), "check-config", "--config", file],
    ]) {
      const r = await runArgv(argv, 30_000);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`bucketfs: config error: ${file}: cannot read config file: no such file`);
    }
  });

  test("workdir outside the bucket: warned and ignored, check-config says read-only (secret never printed)", async () => {
    const caseDir = join(dir, "workdir-outside");
    mkdirSync(caseDir, { recursive: true });
    const file = join(caseDir, "bucketfs.conf");
    writeFileSync(file, section(caseDir, ["bucket = cfg-bucket", "workdir = /elsewhere/work"]), { mode: 0o600 });
    const r = await runArgv([...bucketfsCommand(), "check-config", "--config", file], 30_000);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(
      new RegExp(`^warning: ${escapeRe(file)}:3: key "workdir": /elsewhere/work is not inside .*; ignored, section \\[cfg-bucket\\] is read-only`, "m"),
    );
    expect(r.out).toMatch(/^\s+workdir\s+\(none: read-only\)$/m);
    expect(r.out + r.err).not.toContain(SECRET);
    expect(r.out).toContain("static key ****0001");
    expect(existsSync(join(caseDir, "mnt"))).toBe(false);
  });
});
