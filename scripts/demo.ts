/**
 * The embedded-default demo: a local MinIO on 127.0.0.1 with a sample bucket, mounted by
 * bucketfs, shown working (lazy read outside the workdir, native writes inside it, upload
 * on SIGTERM with the marker last), and the upload checked with an independent client
 * (boto3). `--keep` leaves it mounted until you press Ctrl-C.
 *
 * Is: a guided tour that cleans up after itself. Is not: a test (the suite is scripts/test.sh).
 */
import { startS3Server } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { bucketfsCommand, removeDir, sh, startDaemon } from "../test/helpers/daemon.ts";

const keep = process.argv.includes("--keep");
const say = (s: string) => console.log(`\n\x1b[1m== ${s}\x1b[0m`);
const run = (cmd: string) => {
  console.log(`$ ${cmd}`);
  const r = sh(cmd);
  process.stdout.write(r.out + r.err);
  return r;
};

const server = await startS3Server();
const s3 = s3tool(server);
let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
try {
  say(`local S3 server (${server.kind}) at ${server.endpoint}; creating bucket "sample"`);
  await s3.mkbucket("sample");
  await s3.put("sample", "reference/genome.fa", { text: ">chr1\nACGTACGTACGT\n>chr2\nTTGGCCAA\n" });
  await s3.put("sample", "reads/sample1.fastq", { text: "@r1\nACGT\n+\nIIII\n" });
  await s3.putMany("sample", { prefix: "reads/batch/part-", count: 5, size: 64 * 1024 });
  await s3.put("sample", "work/previous/.exitcode", { text: "0\n" });

  say("mounting with bucketfs (workdir = /sample/work)");
  daemon = await startDaemon(server, [{ bucket: "sample", workdir: "/sample/work" }]);
  const mnt = daemon.mnt.sample!;
  console.log(`config: ${daemon.configPath}\nmount:  ${mnt}`);
  run(`grep ' ${mnt} ' /proc/mounts`);

  say("listing shows real sizes and dates; nothing is downloaded yet");
  run(`ls -l ${mnt} ${mnt}/reads ${mnt}/reads/batch`);
  run(`ls ${daemon.cachePath}/.sample/reference 2>&1 || true`);

  say("first read downloads the object into the cache");
  run(`cat ${mnt}/reference/genome.fa`);
  run(`ls -l ${daemon.cachePath}/.sample/reference`);

  say("outside the workdir the namespace is read-only");
  run(`touch ${mnt}/reference/new.txt 2>&1 || true`);

  say("inside the workdir everything is local POSIX (a Nextflow-like task)");
  run(
    `set -e; d=${mnt}/work/ab/12cd34; mkdir -p $d; cd $d; ` +
      `printf '#!/bin/bash\\ngrep -c ">" genome.fa\\n' > .command.sh; chmod +x .command.sh; ` +
      `cp ${mnt}/reference/genome.fa .; bash .command.sh > result.txt; echo 0 > .exitcode; ls -la $d; cat result.txt`,
  );
  run(`${process.execPath} src/cli/main.ts status --config ${daemon.configPath}`);

  if (keep) {
    say(`mounted at ${mnt}; press Ctrl-C to stop (uploads the workdir)`);
    await new Promise<void>((r) => process.once("SIGINT", () => r()));
  }

  say("systemctl stop equivalent: SIGTERM unmounts, then uploads the workdir (markers last)");
  const code = await daemon.stop("SIGTERM");
  console.log(daemon.log().split("\n").filter((l) => /upload|unmount|stopp/.test(l)).join("\n"));
  console.log(`exit code ${code}`);
  run(`grep -c ' ${mnt}' /proc/mounts || true`);

  say("what S3 has now, seen by an independent client (boto3)");
  const listed = await s3.list("sample", { prefix: "work/" });
  for (const o of listed.objects) console.log(`${String(o.size).padStart(6)}  ${new Date(o.lastModifiedMs).toISOString()}  ${o.key}`);
  const head = await s3.head("sample", "work/ab/12cd34/.command.sh");
  console.log(`metadata of .command.sh: ${JSON.stringify(head?.metadata)}`);
  if (code !== 0 || !listed.objects.some((o) => o.key === "work/ab/12cd34/.exitcode")) throw new Error("demo failed");

  say("from any machine with the config: does S3 hold what the run committed? (the commit record before the markers)");
  const verified = run(`${bucketfsCommand().map((a) => `'${a}'`).join(" ")} verify --config '${daemon.configPath}'`);
  if (verified.code !== 0) throw new Error("bucketfs verify found differences");
  say("demo finished: everything worked");
} finally {
  if (daemon) {
    await daemon.cleanup();
    removeDir(daemon.dir);
  }
  await server.stop();
}
