/**
 * Real workflow engines on real mounts (issue 13): Snakemake 9.27 and Nextflow 24.10.0, as
 * installed by scripts/setup.sh under .build/engines, run against the bucketfs daemon
 * (test/helpers/daemon.ts) and a real MinIO on loopback; S3 is checked with boto3.
 *
 * The layout that works (README "Nextflow", "Snakemake"): inputs are read from the read-only
 * namespace (`<mnt>/data`), everything the engine writes is inside the workdir (`<mnt>/wd`):
 * Snakemake's `--directory` with its `.snakemake/` metadata, Nextflow's launch directory (with
 * `.nextflow/` history and task cache) and `-work-dir`.
 *
 * What Nextflow needs from the filesystem for `-resume` (standard cache mode):
 * - the launch directory's `.nextflow/history` (to find the last session) and
 *   `.nextflow/cache/<session>/db` (the LevelDB task cache), both regular files, uploaded and
 *   prefetched like any other;
 * - each cached task's directory in `-work-dir` with its `.exitcode` (a task without one, e.g.
 *   killed by a stop, is run again) and its declared output files; the `.command.*` files are
 *   what Nextflow wrote there (`.command.sh`, `.command.run`, `.command.out/err/log`,
 *   `.command.begin`, `.command.trace`) and must come back byte-identical for the work dir to
 *   be usable and debuggable;
 * - for every input file, the same path, size and mtime (in milliseconds) as when the task
 *   was hashed: inputs from the namespace get one mtime per object (whole seconds of
 *   Last-Modified, see test/integration/mtime.test.ts), upstream outputs in the work dir get
 *   their mtime back from `x-amz-meta-mtime` when a fresh cache prefetches them. The mount
 *   path must be the same on every node (the path is part of the hash);
 * - not the input symlinks Nextflow stages into task directories (a cached task does not
 *   read them); bucketfs keeps them in its commit record, not as objects, and the next node
 *   gets them back, which the empty-cache test checks (they make a task directory usable).
 *
 * Each suite skips (with the reason in its name) only when its engine is not installed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { bucketfsCommand, daemonDir, removeDir, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { ok, q, run } from "../helpers/run.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const ENGINES = `${REPO}/.build/engines`;
const NXF = `${REPO}/scripts/engines/nextflow`;
const NXF_JAR = `${ENGINES}/nextflow-24.10.0/nextflow-24.10.0.jar`;
const SMK = `${ENGINES}/snakemake-venv/bin/snakemake`;
const HOOK = { timeout: 240_000 };
const ENGINE_TIMEOUT_MS = 300_000;

const javaWorks = spawnSync("java", ["-version"], { stdio: "ignore" }).status === 0;
const haveNextflow = existsSync(NXF_JAR) && javaWorks;
const haveSnakemake = existsSync(SMK);
const skipNote = (have: boolean, what: string) => (have ? "" : ` [SKIPPED: ${what} is not installed; run scripts/setup.sh]`);
if (!haveNextflow) console.warn(`pipelines.test.ts: Nextflow tests skipped: ${existsSync(NXF_JAR) ? "java does not run" : `${NXF_JAR} missing`} (run scripts/setup.sh)`);
if (!haveSnakemake) console.warn(`pipelines.test.ts: Snakemake tests skipped: ${SMK} missing (run scripts/setup.sh)`);

const SAMPLES = ["s1", "s2", "s3"];
/** Input text per sample: comment lines (dropped by the pipelines) and unsorted lines. */
const inputText = (s: string): string => `# header of ${s}\nzeta ${s}\nalpha ${s}\n# comment\nmid ${s}\nbeta\n`;

let server: S3Server;
let s3: S3Tool;
let scratch: string;
const daemons = new Set<DaemonHandle>();
const dirs: string[] = [];

beforeAll(async () => {
  if (!haveNextflow && !haveSnakemake) return;
  server = await startS3Server();
  s3 = s3tool(server);
  mkdirSync(TEST_ROOT, { recursive: true });
  scratch = mkdtempSync(join(TEST_ROOT, "pipelines-"));
}, HOOK);

afterAll(async () => {
  for (const d of [...daemons]) {
    await d.cleanup();
    daemons.delete(d);
  }
  for (const dir of dirs) removeDir(dir);
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, HOOK);

// ---- helpers ------------------------------------------------------------------------------

/** A bucket with data/<sample>.txt inputs, and a daemon dir whose mount path every "node" reuses. */
async function setupBucket(bucket: string): Promise<string> {
  await server.createBucket(bucket);
  for (const s of SAMPLES) await s3.put(bucket, `data/${s}.txt`, { text: inputText(s) });
  const dir = daemonDir(bucket);
  dirs.push(dir);
  return dir;
}

async function mount(bucket: string, dir: string): Promise<{ d: DaemonHandle; M: string }> {
  const d = await startDaemon(server, [{ bucket, workdir: `/${bucket}/wd` }], { dir });
  daemons.add(d);
  return { d, M: d.mnt[bucket] ?? "" };
}

/** SIGTERM and wait: the upload at stop must succeed (exit 0). */
async function unmount(d: DaemonHandle): Promise<void> {
  try {
    const code = await d.stop("SIGTERM", 120_000);
    if (code !== 0) throw new Error(`bucketfs exited ${code}:\n${d.log().slice(-4000)}`);
  } finally {
    await d.cleanup();
    daemons.delete(d);
  }
}

/** Another node: the same mount path, an empty cache. */
function emptyCache(dir: string): void {
  rmSync(`${dir}/cache`, { recursive: true, force: true });
}

/** sha256 of every regular file under `root`, by path relative to it (read by a separate process). */
async function localShas(root: string): Promise<Map<string, string>> {
  const out = await ok(`cd ${q(root)} && find . -type f -print0 | xargs -0 -r sha256sum`);
  const m = new Map<string, string>();
  for (const l of out.split("\n").filter(Boolean)) {
    const [sha, rel] = [l.slice(0, 64), l.slice(66).replace(/^\.\//, "")];
    m.set(rel, sha);
  }
  return m;
}

/** sha256 of every object under `prefix` (boto3), by key relative to the prefix. */
async function s3Shas(bucket: string, prefix: string): Promise<Map<string, string>> {
  const listed = await s3.list(bucket, { prefix });
  const m = new Map<string, string>();
  const keys = listed.objects.map((o) => o.key);
  for (let i = 0; i < keys.length; i += 8) {
    const batch = keys.slice(i, i + 8);
    const got = await Promise.all(batch.map((k) => s3.get(bucket, k)));
    batch.forEach((k, j) => m.set(k.slice(prefix.length), got[j]?.sha256 ?? ""));
  }
  return m;
}

const sorted = (m: Map<string, string>): [string, string][] => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

// ---- Snakemake ----------------------------------------------------------------------------

describe(`Snakemake 9.27: inputs from the namespace, --directory in the workdir${skipNote(haveSnakemake, "Snakemake")}`, () => {
  const B = "smk";
  let dir = "";
  const snakefile = `${REPO}/test/pipelines/Snakefile`;
  const smk = (M: string, extra: string[]) =>
    [SMK, "-s", snakefile, "--directory", `${M}/wd/run`, "--config", `input=${M}/data`, `samples=[${SAMPLES.join(",")}]`, ...extra];
  const smkRun = async (M: string, extra: string[]) => {
    const r = await run(smk(M, extra).map(q).join(" "), { timeoutMs: ENGINE_TIMEOUT_MS, cwd: scratch });
    return { ...r, all: r.out + r.err };
  };
  /** `snakemake --summary`: status and plan of every output file. */
  const summary = async (M: string): Promise<Record<string, string>> => {
    const r = await smkRun(M, ["--summary"]);
    if (r.code !== 0) throw new Error(`snakemake --summary failed (${r.code}):\n${r.all.slice(-3000)}`);
    const rows = r.out.split("\n").filter(Boolean);
    const head = rows.findIndex((l) => l.startsWith("output_file\t"));
    const cols = (rows[head] ?? "").split("\t");
    const [iStatus, iPlan] = [cols.indexOf("status"), cols.indexOf("plan")];
    expect(head >= 0 && iStatus > 0 && iPlan > 0).toBe(true);
    return Object.fromEntries(rows.slice(head + 1).map((l) => l.split("\t")).map((c) => [c[0], `${c[iStatus]}, ${c[iPlan]}`]));
  };
  const OUTPUTS = [
    ...SAMPLES.flatMap((s) => [`filtered/${s}.txt`, `compressed/${s}.txt.gz`, `counts/${s}.tsv`]),
    "results/report.tsv",
    "results/checksums.md5",
  ].sort();
  let firstRun = new Map<string, string>();

  beforeAll(async () => {
    if (haveSnakemake) dir = await setupBucket(B);
  }, HOOK);

  test.skipIf(!haveSnakemake)("a multi-rule workflow runs; after SIGTERM boto3 sees every output and the metadata byte-identical", async () => {
    const { d, M } = await mount(B, dir);
    try {
      const r = await smkRun(M, ["--cores", "2"]);
      if (r.code !== 0) throw new Error(`snakemake failed (${r.code}):\n${r.all.slice(-4000)}`);
      firstRun = await localShas(`${M}/wd/run`);
      // Every output, and Snakemake's per-output metadata (.snakemake/metadata/<base64 path>).
      const outputs = [...firstRun.keys()].filter((k) => !k.startsWith(".snakemake/")).sort();
      expect(outputs).toEqual(OUTPUTS);
      const meta = [...firstRun.keys()].filter((k) => k.startsWith(".snakemake/metadata/"));
      expect(meta.map((k) => Buffer.from(k.slice(".snakemake/metadata/".length), "base64").toString()).sort()).toEqual(OUTPUTS);
      const report = readFileSync(`${M}/wd/run/results/report.tsv`, "utf8");
      expect(report).toBe(SAMPLES.map((s) => `${s}\t4\t${inputText(s).split("\n").filter((l) => l && !l.startsWith("#")).join("").length}\n`).join(""));
    } finally {
      await unmount(d);
    }
    expect(sorted(await s3Shas(B, "wd/run/"))).toEqual(sorted(firstRun));
  }, ENGINE_TIMEOUT_MS);

  for (const node of ["a remount with the same cache", "a remount with an empty cache (another node)"]) {
    test.skipIf(!haveSnakemake)(`${node}: nothing to be done`, async () => {
      expect(firstRun.size).toBeGreaterThan(0);
      if (node.includes("empty")) emptyCache(dir);
      const { d, M } = await mount(B, dir);
      try {
        const plan = await summary(M);
        expect(plan).toEqual(Object.fromEntries(OUTPUTS.map((o) => [o, "ok, no update"])));
        const r = await smkRun(M, ["--cores", "2"]);
        expect(r.code).toBe(0);
        expect(r.all).toContain("Nothing to be done");
        // Nothing was rewritten: outputs and metadata as the first run left them.
        const now = await localShas(`${M}/wd/run`);
        const keep = (m: Map<string, string>) => new Map([...m].filter(([k]) => !k.startsWith(".snakemake/log/")));
        expect(sorted(keep(now))).toEqual(sorted(keep(firstRun)));
      } finally {
        await unmount(d);
      }
    }, ENGINE_TIMEOUT_MS);
  }
});

describe(`Snakemake with a bucketfs sync in the middle of its run${skipNote(haveSnakemake, "Snakemake")}`, () => {
  const B = "smk-sync";
  const snakefile = `${REPO}/test/pipelines/Snakefile`;

  // Without commit records this is what broke: the sync uploads .snakemake/locks and
  // .snakemake/incomplete markers, Snakemake deletes them when it finishes, and the next
  // start brought them back (S3 is never deleted from), so Snakemake refused to run
  // (IncompleteFilesException / LockException).
  test.skipIf(!haveSnakemake)("the markers it deletes after the sync do not come back on the same node or another one", async () => {
    const dir = await setupBucket(B);
    const gate = join(scratch, "smk-sync-gate");
    const args = (M: string, extra: string[]) =>
      [SMK, "-s", snakefile, "--directory", `${M}/wd/run`, "--config", `input=${M}/data`, `samples=[${SAMPLES.join(",")}]`, `gate=${gate}`, ...extra];
    const { d, M } = await mount(B, dir);
    try {
      const smk = Bun.spawn(args(M, ["--cores", "2"]), { cwd: scratch, stdout: "pipe", stderr: "pipe" });
      try {
        // A filter job is running (and waiting for the gate) once its incomplete marker exists.
        const deadline = Date.now() + ENGINE_TIMEOUT_MS;
        while (!(existsSync(`${M}/wd/run/.snakemake/incomplete`) && readdirSync(`${M}/wd/run/.snakemake/incomplete`).length > 0)) {
          if (smk.exitCode !== null) throw new Error(`snakemake ended early (${smk.exitCode}): ${await new Response(smk.stderr).text()}`);
          if (Date.now() > deadline) throw new Error("no snakemake job started");
          await Bun.sleep(100);
        }
        const synced = await run(`${bucketfsCommand().map(q).join(" ")} sync --config ${q(d.configPath)}`, { timeoutMs: 120_000 });
        expect(synced.code).toBe(0);
        const keys = (await s3.list(B, { prefix: "wd/run/.snakemake/" })).objects.map((o) => o.key);
        expect(keys.some((k) => k.startsWith("wd/run/.snakemake/incomplete/"))).toBe(true);
        expect(keys.some((k) => k.startsWith("wd/run/.snakemake/locks/"))).toBe(true);
      } finally {
        writeFileSync(gate, "");
      }
      const [code, err] = await Promise.all([smk.exited, new Response(smk.stderr).text()]);
      if (code !== 0) throw new Error(`snakemake failed (${code}):\n${err.slice(-4000)}`);
      expect(readdirSync(`${M}/wd/run/.snakemake/incomplete`)).toEqual([]);
    } finally {
      await unmount(d);
    }
    for (const node of ["same cache", "empty cache"]) {
      if (node === "empty cache") emptyCache(dir);
      const again = await mount(B, dir);
      try {
        expect(readdirSync(`${again.M}/wd/run/.snakemake/incomplete`)).toEqual([]);
        expect(existsSync(`${again.M}/wd/run/.snakemake/locks`) ? readdirSync(`${again.M}/wd/run/.snakemake/locks`) : []).toEqual([]);
        const r = await run(args(again.M, ["--cores", "2"]).map(q).join(" "), { timeoutMs: ENGINE_TIMEOUT_MS, cwd: scratch });
        if (r.code !== 0) throw new Error(`snakemake on the ${node} failed (${r.code}):\n${(r.out + r.err).slice(-4000)}`);
        expect(r.out + r.err).toContain("Nothing to be done");
      } finally {
        await unmount(again.d);
      }
    }
  }, ENGINE_TIMEOUT_MS * 2);
});

// ---- Nextflow -----------------------------------------------------------------------------

interface TraceRow {
  hash: string;
  name: string;
  status: string;
}

/** Rows of a Nextflow trace file (`-with-trace`), by its header. */
function readTrace(path: string): TraceRow[] {
  const rows = readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => l.split("\t"));
  const cols = rows[0] ?? [];
  const at = (name: string) => cols.indexOf(name);
  expect([at("hash"), at("name"), at("status")].every((i) => i >= 0)).toBe(true);
  return rows.slice(1).map((c) => ({ hash: c[at("hash")] ?? "", name: c[at("name")] ?? "", status: c[at("status")] ?? "" }));
}

const statusCount = (rows: TraceRow[]): Record<string, number> => {
  const n: Record<string, number> = {};
  for (const r of rows) n[r.status] = (n[r.status] ?? 0) + 1;
  return n;
};

describe(`Nextflow 24.10.0: -work-dir in the workdir, inputs from the namespace${skipNote(haveNextflow, "Nextflow")}`, () => {
  const B = "nextflow";
  const TASKS = SAMPLES.length * 3 + 1; // FILTER, COMPRESS, COUNT per sample, one REPORT
  let dir = "";
  let runs = 0;
  let gate = "";
  let started = "";
  let taskPid = 0;
  let nf: ReturnType<typeof Bun.spawn> | undefined;
  let lastTrace: TraceRow[] = [];
  /** `<link> -> <target>` of every symlink in the work dir, as the first node left them. */
  let links = "";
  const symlinks = (M: string) => ok(`cd ${q(launchDir(M))}/work && find . -type l -printf '%P -> %l\n' | sort`);

  const launchDir = (M: string) => `${M}/wd/nf`;
  const nfArgs = (M: string, resume: boolean, trace: string) => [
    NXF, "run", `${REPO}/test/pipelines/main.nf`, "-ansi-log", "false",
    "-work-dir", `${launchDir(M)}/work`, "-with-trace", trace,
    "--input", `${M}/data`, "--gate", gate, "--started", started,
    ...(resume ? ["-resume"] : []),
  ];
  const nfEnv = () => ({ NXF_HOME: `${scratch}/nxf-home`, NXF_ANSI_LOG: "false" });

  /** Run the pipeline to its end; returns the trace rows. */
  const nextflow = async (M: string, resume: boolean): Promise<TraceRow[]> => {
    const trace = `${scratch}/trace-${++runs}.txt`;
    await ok(`mkdir -p ${q(launchDir(M))}`);
    const r = await run(nfArgs(M, resume, trace).map(q).join(" "), { timeoutMs: ENGINE_TIMEOUT_MS, cwd: launchDir(M), env: nfEnv() });
    if (r.code !== 0) throw new Error(`nextflow failed (${r.code}):\n${(r.out + r.err).slice(-4000)}`);
    lastTrace = readTrace(trace);
    return lastTrace;
  };

  const expectedReport = (): string => {
    const counts = SAMPLES.map((s) => {
      const kept = inputText(s).split("\n").filter((l) => l && !l.startsWith("#"));
      return `${s}\t${kept.length}\t${kept.join("").length}\n`;
    });
    return counts.join("");
  };

  beforeAll(async () => {
    if (!haveNextflow) return;
    dir = await setupBucket(B);
    gate = `${scratch}/nf-gate`;
    started = `${scratch}/nf-started`;
  }, HOOK);

  /** End the interrupted Nextflow run (SIGTERM, then SIGKILL after 60 s). */
  const stopNextflow = async (): Promise<void> => {
    if (!nf) return;
    if (nf.exitCode === null) nf.kill("SIGTERM");
    const how = await Promise.race([nf.exited, Bun.sleep(60_000).then(() => "timeout" as const)]);
    if (how === "timeout") {
      nf.kill("SIGKILL");
      await nf.exited;
    }
  };

  afterAll(async () => {
    await stopNextflow();
    if (taskPid > 0) {
      try {
        process.kill(taskPid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }, HOOK);

  test.skipIf(!haveNextflow)("a stop during a running task names it (pid and command), finishes, and -resume after the restart completes the pipeline", async () => {
    writeFileSync(gate, "hold\n");
    rmSync(started, { force: true });
    let { d, M } = await mount(B, dir);
    try {
      await ok(`mkdir -p ${q(launchDir(M))}`);
      const trace = `${scratch}/trace-${++runs}.txt`;
      const proc = Bun.spawn(nfArgs(M, false, trace), {
        cwd: launchDir(M),
        env: { ...(process.env as Record<string, string>), ...nfEnv() },
        stdin: "ignore",
        stdout: Bun.file(`${scratch}/nf-interrupted.out`),
        stderr: Bun.file(`${scratch}/nf-interrupted.err`),
      });
      nf = proc;
      // REPORT writes its pid when it starts (every other task has finished by then).
      const deadline = Date.now() + ENGINE_TIMEOUT_MS - 30_000;
      while (!existsSync(started) || readFileSync(started, "utf8").trim() === "") {
        if (proc.exitCode !== null) throw new Error(`nextflow exited ${proc.exitCode} before REPORT started:\n${readFileSync(`${scratch}/nf-interrupted.out`, "utf8").slice(-3000)}`);
        if (Date.now() > deadline) throw new Error("REPORT did not start");
        await Bun.sleep(200);
      }
      taskPid = Number(readFileSync(started, "utf8").trim());
      expect(readlinkSync(`/proc/${taskPid}/cwd`).startsWith(`${launchDir(M)}/work/`)).toBe(true);
      const comm = readFileSync(`/proc/${taskPid}/comm`, "utf8").trim();

      // The stop finishes although the task keeps the workdir busy ...
      expect(await d.stop("SIGTERM", 120_000)).toBe(0);
      daemons.delete(d);
      // ... and names the task in what it tells the operator (the daemon's output: there is
      // no structured status for a stop yet, and this line is the user-visible promise).
      const busyLine = d.log().split("\n").find((l) => l.includes("workdir in use by"));
      expect(busyLine ?? "").toContain(`${taskPid} (${comm})`);
    } finally {
      await stopNextflow();
      try {
        process.kill(taskPid, "SIGKILL");
      } catch {
        /* Nextflow killed it */
      }
      await d.cleanup();
      daemons.delete(d);
    }
    // The interrupted run's S3 state: finished tasks have their .exitcode, REPORT has none.
    const exitcodes = (await s3.list(B, { prefix: "wd/nf/work/" })).objects.filter((o) => o.key.endsWith("/.exitcode"));
    expect(exitcodes.length).toBe(TASKS - 1);

    // Restart on the same cache, open the gate, resume: REPORT runs, everything else is cached.
    rmSync(gate, { force: true });
    ({ d, M } = await mount(B, dir));
    try {
      const rows = await nextflow(M, true);
      expect(statusCount(rows)).toEqual({ CACHED: TASKS - 1, COMPLETED: 1 });
      expect(rows.find((r) => r.status === "COMPLETED")?.name).toBe("REPORT");
      const hash = rows.find((r) => r.name === "REPORT")?.hash ?? "";
      const report = await ok(`cat ${q(launchDir(M))}/work/${hash}*/report.tsv`);
      expect(report.startsWith(expectedReport())).toBe(true);
      expect(report.split("\n").filter((l) => l.endsWith(".txt.gz")).length).toBe(SAMPLES.length);
      links = await symlinks(M);
    } finally {
      await unmount(d);
    }
  }, 2 * ENGINE_TIMEOUT_MS);

  test.skipIf(!haveNextflow)("every .exitcode reaches S3 after its task's other files", async () => {
    expect(lastTrace.length).toBe(TASKS);
    const objs = (await s3.list(B, { prefix: "wd/nf/work/" })).objects;
    const byTask = new Map<string, { exit?: number; others: number[] }>();
    for (const o of objs) {
      const m = /^wd\/nf\/work\/([0-9a-f]{2}\/[0-9a-f]{30})\/(.+)$/.exec(o.key);
      expect(m).not.toBeNull();
      const t = byTask.get(m?.[1] ?? "") ?? { others: [] };
      if (m?.[2] === ".exitcode") t.exit = o.lastModifiedMs;
      else t.others.push(o.lastModifiedMs);
      byTask.set(m?.[1] ?? "", t);
    }
    // Every task of the final run has its directory, with an .exitcode, in S3.
    for (const r of lastTrace) {
      const dirs = [...byTask.keys()].filter((k) => k.startsWith(r.hash));
      expect({ task: r.name, withExitcode: dirs.some((k) => byTask.get(k)?.exit !== undefined) }).toEqual({ task: r.name, withExitcode: true });
    }
    // S3's Last-Modified (ms, one server clock): the marker is written after every other file.
    for (const [task, t] of byTask) {
      if (t.exit === undefined) continue; // the attempt the stop interrupted
      expect(t.others.length).toBeGreaterThanOrEqual(5); // .command.{sh,run,out,err,log,begin,trace} and outputs
      expect({ task, exitcodeNotBefore: t.exit >= Math.max(...t.others) }).toEqual({ task, exitcodeNotBefore: true });
    }
  });

  for (const node of ["a remount with the same cache", "a remount with an empty cache (another node)"]) {
    test.skipIf(!haveNextflow)(`${node}, then -resume: no task runs again`, async () => {
      expect(lastTrace.length).toBe(TASKS);
      if (node.includes("empty")) emptyCache(dir);
      const { d, M } = await mount(B, dir);
      try {
        // The staged input links are back (from the commit record on another node).
        expect(links.split("\n").filter(Boolean).length).toBeGreaterThanOrEqual(TASKS);
        expect(await symlinks(M)).toBe(links);
        const rows = await nextflow(M, true);
        expect(statusCount(rows)).toEqual({ CACHED: TASKS });
      } finally {
        await unmount(d);
      }
    }, ENGINE_TIMEOUT_MS);
  }
});
