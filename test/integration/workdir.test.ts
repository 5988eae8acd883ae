/**
 * Integration test of the workdir transaction (prefetch + upload) against a REAL S3 server
 * (MinIO from test/helpers/s3server.ts), through bucketfs' own S3 store, verified with the
 * independent boto3 client (test/helpers/s3tool.ts).
 *
 * Covers: a Nextflow-like task tree uploaded with the right bytes and s3fs/rclone metadata,
 * markers last, symlinks skipped, no remote deletes, nothing re-uploaded; prefetch bytes,
 * mtime and mode, hostile keys never written, dirty files kept; a server that dies mid-way
 * (prefetch throws without temp files; upload holds back markers, and a later run after
 * the restart finishes the job).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openIndex } from "../../src/cache/db.ts";
import { lstatBig, walkWorkdir, WorkdirJournal } from "../../src/service/workdir/journal.ts";
import { PrefetchError, prefetchWorkdir, type WorkdirSpec } from "../../src/service/workdir/prefetch.ts";
import { formatMode, formatMtime, uploadWorkdir } from "../../src/service/workdir/upload.ts";
import { createS3Store } from "../../src/store/s3.ts";
import type { ObjectStore } from "../../src/store/types.ts";
import { logger, setSink } from "../../src/util/log.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { writeRandom } from "../helpers/files.ts";

const BUCKET = "bfs-workdir";
const MiB = 1024 * 1024;
const BIG_FILE_BYTES = 200 * MiB;
const SLOW = 240_000;

let server: S3Server;
let s3: S3Tool;
let sandbox: string;
let n = 0;
const lines: string[] = [];
const restoreSink = setSink((l) => {
  lines.push(l);
  if (process.env.BUCKETFS_TEST_VERBOSE === "1") process.stderr.write(l + "\n");
});
const log = logger("workdir-it");

function makeStore(fast = false): ObjectStore {
  return createS3Store(
    {
      bucket: BUCKET,
      accessKeyId: server.accessKey,
      secretAccessKey: server.secretKey,
      region: server.region,
      endpoint: server.endpoint,
      partSize: 16 * MiB,
      transferConcurrency: 8,
    },
    fast ? { maxAttempts: 1, idleTimeoutMs: 3000 } : {},
  );
}

/** A fresh workdir prefix (own key space per test), cache dir and journal (own index file). */
function fresh(concurrency = 8): { spec: WorkdirSpec; journal: WorkdirJournal; PREFIX: string } {
  n++;
  const PREFIX = `workdir${n}/`;
  const base = join(sandbox, `case${n}`);
  mkdirSync(base, { recursive: true });
  const spec: WorkdirSpec = { prefix: PREFIX, localDir: join(base, "wd"), lastUploadFile: ".exitcode", concurrency };
  return { spec, journal: new WorkdirJournal(openIndex(join(base, "index.db")), PREFIX), PREFIX };
}

function sha256File(path: string | Buffer): string {
  const h = new Bun.CryptoHasher("sha256");
  h.update(readFileSync(path));
  return h.digest("hex");
}

/**
 * The real store, with extra keys in its listing whose bodies come from real objects: how
 * keys that MinIO refuses (but AWS S3 accepts) reach prefetch.
 */
function withExtraKeys(store: ObjectStore, extras: Map<string, string>): ObjectStore {
  return {
    ...store,
    bucket: store.bucket,
    async *listAll(prefix, signal) {
      for await (const o of store.listAll(prefix, signal)) yield o;
      for (const [key, real] of extras) {
        const info = await store.head(real, signal);
        if (info && key.startsWith(prefix)) yield { ...info, key, meta: undefined };
      }
    },
    async download(key, dest, opts) {
      const real = extras.get(key);
      return { ...(await store.download(real ?? key, dest, opts)), key };
    },
  };
}

/** SIGKILL the server process (it is this test's child); `server.restart()` brings it back. */
function killServer(): void {
  const pid = server.pid;
  if (pid !== undefined) process.kill(pid, "SIGKILL");
}

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
  await server.createBucket(BUCKET);
  mkdirSync(TEST_ROOT, { recursive: true });
  sandbox = mkdtempSync(join(TEST_ROOT, "workdir-it-"));
}, 120_000);

afterAll(async () => {
  restoreSink();
  try {
    await server?.stop();
  } finally {
    if (sandbox) rmSync(sandbox, { recursive: true, force: true });
  }
}, 60_000);

describe("uploadWorkdir against MinIO", () => {
  test(
    "a Nextflow-like task tree: every regular file with bytes and metadata, markers last, symlinks skipped, no deletes, no re-upload",
    async () => {
      const { spec, journal, PREFIX } = fresh();
      const t1 = "work/ab/cdef0123456789abcdef0123456789";
      const t2 = "work/7f/0e1d2c3b4a5968778695a4b3c2d1e0f";
      mkdirSync(join(spec.localDir, t1, "outputs/nested/deeper"), { recursive: true });
      mkdirSync(join(spec.localDir, t2), { recursive: true });
      const w = (rel: string, content: string | number): void => {
        const p = join(spec.localDir, rel);
        if (typeof content === "number") writeRandom(p, content);
        else writeFileSync(p, content);
      };
      w(`${t1}/.command.sh`, "#!/bin/bash\necho hello > outputs/result.txt\n");
      w(`${t1}/.command.run`, "#!/bin/bash\nbash .command.sh\n");
      chmodSync(join(spec.localDir, `${t1}/.command.run`), 0o755);
      w(`${t1}/.command.out`, "hello\n");
      w(`${t1}/.command.err`, "");
      w(`${t1}/.command.log`, "log line\n");
      w(`${t1}/outputs/result.txt`, "hello\n");
      w(`${t1}/outputs/nested/deeper/table.tsv`, "a\tb\n1\t2\n");
      w(`${t1}/outputs/big.bin`, BIG_FILE_BYTES);
      w(`${t1}/.exitcode`, "0");
      w(`${t2}/.command.sh`, "true\n");
      w(`${t2}/sample.bam`, 3 * MiB + 17);
      w(`${t2}/.exitcode`, "0");
      symlinkSync("/etc/hostname", join(spec.localDir, t1, "input.fastq"));
      symlinkSync("../outputs", join(spec.localDir, t2, "linked-dir"));
      // An object only in S3: it must survive (no deletes, ever).
      await s3.put(BUCKET, `${PREFIX}remote-only.txt`, { text: "remote" });

      const store = makeStore();
      const r = await uploadWorkdir(store, journal, spec, log);
      expect(r.failed).toEqual([]);
      expect(r.ok).toBe(true);

      const regular = walkWorkdir(spec.localDir).entries.filter((e) => e.kind === "file");
      expect(regular.length).toBe(12);
      expect(r.uploaded).toBe(12);
      expect(r.skipped.map((s) => `${s.kind}:${s.path}`).sort()).toEqual([`symlink:${t1}/input.fastq`, `symlink:${t2}/linked-dir`].sort());
      expect(r.markersUploaded.sort()).toEqual([`${t1}/.exitcode`, `${t2}/.exitcode`].sort());
      // Upload order: both markers after every other file.
      expect(r.order.slice(-2).sort()).toEqual([`${t1}/.exitcode`, `${t2}/.exitcode`].sort());
      expect(r.uploadedBytes).toBe(regular.reduce((s, e) => s + e.stamp.size, 0));

      for (const e of regular) {
        const key = PREFIX + e.rel;
        const got = await s3.get(BUCKET, key);
        expect({ key, sha: got.sha256 }).toEqual({ key, sha: sha256File(e.abs) });
        const head = await s3.head(BUCKET, key);
        const st = lstatBig(e.abs);
        expect(head?.metadata.mtime).toBe(formatMtime(st?.mtimeNs ?? 0n));
        expect(head?.metadata.mode).toBe(formatMode(Number(st?.mode)));
        expect(head?.metadata.uid).toBe(String(st?.uid));
      }
      expect((await s3.head(BUCKET, `${PREFIX}${t1}/.command.run`))?.metadata.mode).toBe("0100755");
      expect(await s3.head(BUCKET, `${PREFIX}${t1}/input.fastq`)).toBeNull();

      // Each .exitcode's LastModified is not earlier than its siblings'.
      const listed = (await s3.list(BUCKET, { prefix: PREFIX })).objects;
      for (const task of [t1, t2]) {
        const marker = listed.find((o) => o.key === `${PREFIX}${task}/.exitcode`);
        const siblings = listed.filter((o) => o.key.startsWith(`${PREFIX}${task}/`) && o.key !== marker?.key);
        expect(siblings.length).toBeGreaterThan(0);
        for (const s of siblings) expect(marker?.lastModifiedMs ?? 0).toBeGreaterThanOrEqual(s.lastModifiedMs);
      }
      expect(listed.some((o) => o.key === `${PREFIX}remote-only.txt`)).toBe(true);

      const again = await uploadWorkdir(store, journal, spec, log);
      expect(again.uploaded).toBe(0);
      expect(again.unchanged).toBe(12);
      expect(again.ok).toBe(true);
      expect(journal.pending(spec.localDir)).toEqual([]);
      expect((await s3.head(BUCKET, `${PREFIX}remote-only.txt`))?.size).toBe(6);
      await s3.deleteMany(BUCKET, { prefix: PREFIX });
    },
    SLOW,
  );

  test(
    "server down: failures reported, markers held back, files stay dirty; after restart the next run uploads them and the markers",
    async () => {
      const { spec, journal, PREFIX } = fresh(4);
      mkdirSync(join(spec.localDir, "work/aa/task"), { recursive: true });
      for (let i = 0; i < 6; i++) writeFileSync(join(spec.localDir, `work/aa/task/out${i}.txt`), `output ${i}\n`);
      writeFileSync(join(spec.localDir, "work/aa/task/.exitcode"), "0");
      const store = makeStore(true);
      killServer();
      try {
        const r = await uploadWorkdir(store, journal, spec, log);
        expect(r.ok).toBe(false);
        expect(r.uploaded).toBe(0);
        expect(r.failed.length).toBe(6);
        expect(r.markersUploaded).toEqual([]);
        expect(r.markersHeldBack).toEqual(["work/aa/task/.exitcode"]);
        expect(journal.pending(spec.localDir).length).toBe(7);
        const st = journal.status(spec.localDir);
        expect(st.failures.length).toBe(7);
        expect(st.runs[0]?.outcome).toBe("failed");
      } finally {
        await server.restart();
      }
      expect((await s3.list(BUCKET, { prefix: PREFIX })).objects).toEqual([]);

      const r2 = await uploadWorkdir(makeStore(), journal, spec, log);
      expect(r2.ok).toBe(true);
      expect(r2.uploaded).toBe(7);
      expect(r2.order.at(-1)).toBe("work/aa/task/.exitcode");
      expect(journal.pending(spec.localDir)).toEqual([]);
      expect(journal.failures()).toEqual([]);
      const keys = (await s3.list(BUCKET, { prefix: PREFIX })).objects.map((o) => o.key);
      expect(keys).toContain(`${PREFIX}work/aa/task/.exitcode`);
      expect(keys.length).toBe(7);
      await s3.deleteMany(BUCKET, { prefix: PREFIX });
    },
    SLOW,
  );
});

describe("prefetchWorkdir against MinIO", () => {
  test(
    "objects land with bytes, mtime and mode; hostile keys are never written; dirty files survive; unchanged files are not fetched again",
    async () => {
      const { spec, journal, PREFIX } = fresh();
      const put = (key: string, text: string, metadata?: Record<string, string>) =>
        s3.put(BUCKET, PREFIX + key, { text }, metadata ? { metadata } : undefined);
      await put("a/with-meta.txt", "meta!", { mtime: "1600000000.25", mode: "33261" });
      await put("a/octal-mode.txt", "octal", { mode: "0100600", mtime: "1600000100" });
      await put("plain.txt", "plain");
      await put("emptydir/", "");
      const bigLocal = join(sandbox, `mp${n}.bin`);
      writeRandom(bigLocal, 12 * MiB + 5);
      const mp = await s3.put(BUCKET, `${PREFIX}multi/part.bin`, { file: bigLocal }, { multipart: true, partSize: 5 * MiB });
      await put("clash/inner.txt", "inner");
      await put("decoy.txt", "decoy");

      // Hostile keys: MinIO refuses most of them (and cannot hold `clash` next to
      // `clash/inner.txt`), so besides trying them for real, the listing is extended with
      // them (their bodies are served from a real object) as AWS S3 would list them.
      const hostile = [`${PREFIX}../x-escape`, `${PREFIX}/y-double`, `${PREFIX}./z-dot`, `${PREFIX}${"n".repeat(300)}`, `${PREFIX}sub/../../w-escape`];
      const present: string[] = [];
      for (const k of hostile) {
        try {
          await s3.put(BUCKET, k, { text: "hostile" });
          present.push(k);
        } catch {
          // the server refused the name
        }
      }
      log.info(`hostile keys stored by ${server.kind}: ${present.length}/${hostile.length}`);
      const extras = new Map([...hostile, `${PREFIX}clash`].map((k) => [k, `${PREFIX}decoy.txt`]));
      const store = withExtraKeys(makeStore(), extras);
      const r = await prefetchWorkdir(store, journal, spec, log);
      const L = (rel: string) => join(spec.localDir, rel);
      expect(readFileSync(L("a/with-meta.txt"), "utf8")).toBe("meta!");
      expect(statSync(L("a/with-meta.txt")).mtimeMs).toBeCloseTo(1_600_000_000_250, 0);
      expect(statSync(L("a/with-meta.txt")).mode & 0o7777).toBe(0o755);
      expect(statSync(L("a/octal-mode.txt")).mode & 0o7777).toBe(0o600);
      expect(statSync(L("a/octal-mode.txt")).mtimeMs).toBe(1_600_000_100_000);
      const plainHead = await s3.head(BUCKET, `${PREFIX}plain.txt`);
      expect(Math.abs(statSync(L("plain.txt")).mtimeMs - (plainHead?.lastModifiedMs ?? 0))).toBeLessThan(1000);
      expect(statSync(L("plain.txt")).mode & 0o7777).toBe(0o644);
      expect(lstatSync(L("emptydir")).isDirectory()).toBe(true);
      expect(sha256File(L("multi/part.bin"))).toBe(mp.sha256);
      expect(lstatSync(L("clash")).isDirectory()).toBe(true);
      expect(readFileSync(L("clash/inner.txt"), "utf8")).toBe("inner");
      expect(r.skipped.map((s) => s.key)).toContain(`${PREFIX}clash`);
      for (const k of hostile) expect(r.skipped.map((s) => s.key)).toContain(k);
      // Nothing outside localDir: the case dir holds only wd/ and the index files.
      const caseDir = join(spec.localDir, "..");
      expect(readdirSync(caseDir).filter((f) => !f.startsWith("index.db")).sort()).toEqual(["wd"]);
      expect(readdirSync(sandbox).filter((f) => /escape|double|dot/.test(f))).toEqual([]);
      expect(readdirSync(spec.localDir).sort()).toEqual(["a", "clash", "decoy.txt", "emptydir", "multi", "plain.txt"]);
      expect(walkWorkdir(spec.localDir).tempFiles).toEqual([]);
      expect(journal.pending(spec.localDir)).toEqual([]);

      // Local edit (dirty) vs remote edits; an untouched file is not fetched again.
      writeFileSync(L("plain.txt"), "LOCAL EDIT, not uploaded yet");
      await put("plain.txt", "remote v2");
      await put("a/octal-mode.txt", "octal v2", { mode: "0100600", mtime: "1600000200" });
      const r2 = await prefetchWorkdir(store, journal, spec, log);
      expect(readFileSync(L("plain.txt"), "utf8")).toBe("LOCAL EDIT, not uploaded yet");
      expect(r2.keptLocal).toEqual(["plain.txt"]);
      expect(readFileSync(L("a/octal-mode.txt"), "utf8")).toBe("octal v2");
      expect(r2.downloaded).toBe(1);
      expect(r2.upToDate).toBe(4); // with-meta, multipart, clash/inner, decoy
      expect(journal.pending(spec.localDir).map((p) => p.path)).toEqual(["plain.txt"]);
      await s3.deleteMany(BUCKET, { prefix: PREFIX });
      for (const k of present.filter((k) => !k.startsWith(PREFIX))) await s3.deleteMany(BUCKET, { keys: [k] });
    },
    SLOW,
  );

  test(
    "server killed mid-way: prefetch throws with bucket and key, leaves no temp files, completed files are intact",
    async () => {
      const { spec, journal, PREFIX } = fresh(2);
      const COUNT = 48;
      const SIZE = 4 * MiB;
      const put = await s3.putMany(BUCKET, { prefix: `${PREFIX}many/f`, count: COUNT, size: SIZE, workers: 16 });
      const sums = new Map(put.map((p) => [p.key.slice(PREFIX.length), p.sha256]));
      const store = makeStore(true);
      const running = prefetchWorkdir(store, journal, spec, log).then(
        () => null,
        (e: unknown) => e,
      );
      // Kill the server as soon as the first file is complete.
      const manyDir = join(spec.localDir, "many");
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        if (existsSync(manyDir) && readdirSync(manyDir).some((f) => !f.startsWith("."))) break;
        await Bun.sleep(1);
      }
      killServer();
      let err: unknown;
      try {
        err = await running;
      } finally {
        await server.restart();
      }
      expect(err).toBeInstanceOf(PrefetchError);
      const msg = (err as Error).message;
      expect(msg).toContain(BUCKET);
      expect(msg).toContain(`${PREFIX}many/f`);
      expect(walkWorkdir(spec.localDir).tempFiles).toEqual([]);
      const landed = readdirSync(manyDir);
      expect(landed.length).toBeGreaterThan(0);
      expect(landed.length).toBeLessThan(COUNT);
      for (const f of landed) expect(sha256File(join(manyDir, f))).toBe(sums.get(`many/${f}`) ?? "");
      expect(journal.runs(1)[0]?.outcome).toBe("failed");

      // After the restart, the next prefetch completes and fetches only what is missing.
      const r = await prefetchWorkdir(makeStore(), journal, spec, log);
      expect(r.upToDate).toBe(landed.length);
      expect(r.downloaded).toBe(COUNT - landed.length);
      expect(readdirSync(manyDir).length).toBe(COUNT);
      await s3.deleteMany(BUCKET, { prefix: PREFIX });
    },
    SLOW,
  );
});
