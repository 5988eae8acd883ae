/**
 * An https endpoint: MinIO serving TLS with a certificate made for this run, the daemon trusting
 * it through NODE_EXTRA_CA_CERTS (as an operator with a private CA would), boto3 through
 * AWS_CA_BUNDLE. Reads (a small object downloaded whole, a large one streamed, listings) go over
 * src/store/s3/http1.ts's TLS sockets, the workdir upload over fetch; S3 is checked with boto3.
 * Without the certificate the daemon refuses to start and says why, without retrying. Host name
 * verification: servers with a certificate for another name, an expired one and one from an
 * unknown CA are each refused with an error naming the endpoint. HTTPS_PROXY: every request goes
 * through a CONNECT proxy on loopback, NO_PROXY bypasses it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { daemonDir, removeDir, sh, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { sha256File, writeRandom } from "../helpers/files.ts";
import { startConnectProxy } from "../helpers/fault-proxy.ts";
import { statusJson } from "../helpers/status.ts";
import { run } from "../helpers/run.ts";

const MiB = 1024 * 1024;
const BUCKET = "tls-data";
const TIMEOUT = 240_000;

let server: S3Server;
let s3: S3Tool;
let scratch: string;
const sums: Record<string, string> = {};
const handles = new Set<DaemonHandle>();

beforeAll(async () => {
  server = await startS3Server({ tls: true });
  s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  scratch = mkdtempSync(join(TEST_ROOT, "tls-"));
  for (const [key, size] of [["in/small.bin", 300_000], ["in/big.bin", 20 * MiB + 3]] as const) {
    const f = join(scratch, key.replace("/", "-"));
    writeRandom(f, size);
    sums[key] = await sha256File(f);
    await s3.put(BUCKET, key, { file: f });
  }
}, TIMEOUT);

afterAll(async () => {
  for (const h of handles) await h.cleanup();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, TIMEOUT);

describe("https endpoint", () => {
  test("reads over TLS sockets and an upload over fetch, with the certificate from NODE_EXTRA_CA_CERTS", async () => {
    expect(server.endpoint).toStartWith("https://");
    const dir = daemonDir("tls");
    const d = await startDaemon(server, [{ bucket: BUCKET, workdir: `/${BUCKET}/work` }], {
      dir, env: { NODE_EXTRA_CA_CERTS: server.caFile! },
    });
    handles.add(d);
    try {
      const mnt = d.mnt[BUCKET]!;
      const ls = sh(`ls ${mnt}/in`);
      expect(ls.out.trim().split("\n")).toEqual(["big.bin", "small.bin"]);
      const got = sh(`sha256sum ${mnt}/in/small.bin ${mnt}/in/big.bin`);
      expect(got.code).toBe(0);
      expect(got.out.trim().split("\n").map((l) => l.split(" ")[0])).toEqual([sums["in/small.bin"], sums["in/big.bin"]]);
      writeFileSync(join(mnt, "work", "out.txt"), "written over https\n");
      expect(await d.stop()).toBe(0);
      handles.delete(d);
      const back = await s3.getBytes(BUCKET, "work/out.txt");
      expect(Buffer.from(back).toString()).toBe("written over https\n");
    } finally {
      await d.cleanup();
      removeDir(dir);
    }
  }, TIMEOUT);

  test("without the certificate: the start fails at once, and a read-only mount answers EIO, each naming the TLS problem", async () => {
    const env: Record<string, string> = { NODE_EXTRA_CA_CERTS: "" };
    // With a workdir the start writes the lease first (fetch): refused, not retried.
    const dir = daemonDir("tls-untrusted");
    const d = await startDaemon(server, [{ bucket: BUCKET, workdir: `/${BUCKET}/work` }], { dir, env, expectFailure: true, timeoutMs: 60_000 });
    handles.add(d);
    try {
      expect(await d.proc.exited).toBe(1);
      expect(d.log()).toMatch(/self[- ]signed certificate/i);
      expect(d.log()).not.toMatch(/attempt 2 failed/);
    } finally {
      await d.cleanup();
      removeDir(dir);
    }
    // Without one the mount starts; the first listing (http1's TLS socket) fails with EIO.
    const dir2 = daemonDir("tls-untrusted-ro");
    const r = await startDaemon(server, [{ bucket: BUCKET }], { dir: dir2, env });
    handles.add(r);
    try {
      const ls = sh(`ls ${r.mnt[BUCKET]}/in`);
      expect(ls.code).not.toBe(0);
      expect(ls.err).toMatch(/Input\/output error/);
      expect(r.log()).toMatch(/TLS: self[- ]signed certificate \(127\.0\.0\.1:\d+\)/);
      expect(r.log()).not.toMatch(/attempt 2 failed/);
      expect(await r.stop()).toBe(0);
      handles.delete(r);
    } finally {
      await r.cleanup();
      removeDir(dir2);
    }
  }, TIMEOUT);
});

/**
 * Certificates made for this run with python3's `cryptography`: a CA the client trusts
 * (NODE_EXTRA_CA_CERTS), and three server certificates it must refuse: one for another host
 * name, an expired one, and one from an unknown CA.
 */
function makeCerts(dir: string): void {
  const py = `
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
d = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
def key(): return ec.generate_private_key(ec.SECP256R1())
def save(name, k, c):
    open(f"{d}/{name}.key", "wb").write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    open(f"{d}/{name}.crt", "wb").write(c.public_bytes(serialization.Encoding.PEM))
def ca(name):
    k = key(); n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    c = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(k, hashes.SHA256()))
    return k, c
def leaf(name, issuer, sans, before, after):
    ik, ic = issuer; k = key()
    c = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ic.subject)
         .public_key(k.public_key()).serial_number(x509.random_serial_number()).not_valid_before(before).not_valid_after(after)
         .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(ik, hashes.SHA256()))
    save(tag, k, c)
trusted = ca("bft trusted test CA"); save("ca", *trusted)
unknown = ca("bft unknown CA")
ip = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
day = datetime.timedelta(days=1)
tag = "good"; leaf("127.0.0.1", trusted, ip, now - day, now + day)
tag = "othername"; leaf("other.invalid", trusted, [x509.DNSName("other.invalid")], now - day, now + day)
tag = "expired"; leaf("127.0.0.1", trusted, ip, now - 3 * day, now - day)
tag = "unknownca"; leaf("127.0.0.1", unknown, ip, now - day, now + day)
`;
  const r = Bun.spawnSync(["python3", "-c", py, dir], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`making test certificates failed: ${r.stderr.toString()}`);
}

/** A HeadObject through the real store in a child process that trusts `ca`: what it threw. */
async function headVia(endpoint: string, ca: string): Promise<{ kind?: string; message?: string; ok?: boolean }> {
  const repo = new URL("../..", import.meta.url).pathname;
  const code = `
    const { createS3Store } = await import(${JSON.stringify(`${repo}src/store/s3.ts`)});
    const st = createS3Store({ bucket: "b", accessKeyId: "a", secretAccessKey: "s", region: "us-east-1", endpoint: ${JSON.stringify(endpoint)}, partSize: 8388608, transferConcurrency: 1 }, { retryBaseMs: 10 });
    try { await st.head("k"); console.log(JSON.stringify({ ok: true })); }
    catch (e) { console.log(JSON.stringify({ kind: e.kind, message: e.message })); }
    process.exit(0);`;
  const p = Bun.spawn([process.execPath, "-e", code], { env: { ...process.env, NODE_EXTRA_CA_CERTS: ca }, stdout: "pipe", stderr: "pipe" });
  const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  return JSON.parse(out.trim().split("\n").pop() ?? "{}") as { kind?: string; message?: string; ok?: boolean };
}

describe("certificate checks: each refusal is a clear error naming the endpoint", () => {
  test("another host name, an expired certificate, an unknown CA; a good one is accepted", async () => {
    const dir = mkdtempSync(join(TEST_ROOT, "certs-"));
    const servers: ReturnType<typeof Bun.serve>[] = [];
    try {
      makeCerts(dir);
      const serve = (name: string) => {
        const s = Bun.serve({
          hostname: "127.0.0.1", port: 0,
          tls: { cert: Bun.file(join(dir, `${name}.crt`)), key: Bun.file(join(dir, `${name}.key`)) },
          fetch: () => new Response(null, { status: 404, headers: { "content-length": "0" } }),
        });
        servers.push(s);
        return `https://127.0.0.1:${s.port}`;
      };
      const ca = join(dir, "ca.crt");
      const good = await headVia(serve("good"), ca);
      expect(good).toEqual({ ok: true }); // 404 on HEAD: absent, not an error
      for (const [name, why] of [["othername", /altname|host ?name|IP/i], ["expired", /expired/i], ["unknownca", /issuer|unable to (?:get|verify)|self[- ]signed/i]] as const) {
        const endpoint = serve(name);
        const r = await headVia(endpoint, ca);
        expect(r.ok).toBeUndefined();
        expect(r.kind).toBe("other");
        expect(r.message).toContain("TLS:");
        expect(r.message).toContain(endpoint.replace("https://", ""));
        expect(r.message).toMatch(why);
      }
    } finally {
      for (const s of servers) s.stop(true);
      rmSync(dir, { recursive: true, force: true });
    }
  }, TIMEOUT);
});

describe("HTTPS_PROXY", () => {
  test("every request goes through the CONNECT proxy HTTPS_PROXY names; NO_PROXY bypasses it", async () => {
    const proxy = await startConnectProxy();
    const dir = daemonDir("tls-proxy");
    let d: DaemonHandle | undefined;
    try {
      d = await startDaemon(server, [{ bucket: BUCKET, workdir: `/${BUCKET}/viaproxy` }], {
        dir, env: { NODE_EXTRA_CA_CERTS: server.caFile!, HTTPS_PROXY: proxy.url, NO_PROXY: "" },
      });
      handles.add(d);
      const mnt = d.mnt[BUCKET]!;
      // The proxy runs in this process: reads through the mount run as async child processes.
      const got = await run(`sha256sum ${mnt}/in/small.bin`);
      expect(got.out.split(" ")[0]).toBe(sums["in/small.bin"]);
      writeFileSync(join(mnt, "viaproxy", "p.txt"), "through the proxy\n");
      const st = (await statusJson(d.configPath)).find((b) => b.bucket === BUCKET)!;
      expect(st.network?.proxy).toBe(proxy.url);
      expect(await d.stop()).toBe(0);
      handles.delete(d);
      expect(proxy.tunnels).toBeGreaterThan(0);
      expect(Buffer.from(await s3.getBytes(BUCKET, "viaproxy/p.txt")).toString()).toBe("through the proxy\n");

      // NO_PROXY naming the endpoint's host: no tunnel at all.
      const before = proxy.tunnels;
      const d2 = await startDaemon(server, [{ bucket: BUCKET }], {
        dir, env: { NODE_EXTRA_CA_CERTS: server.caFile!, HTTPS_PROXY: proxy.url, NO_PROXY: "127.0.0.1" },
      });
      handles.add(d2);
      expect((await run(`ls ${d2.mnt[BUCKET]}/in`)).out.trim().split("\n")).toEqual(["big.bin", "small.bin"]);
      expect(await d2.stop()).toBe(0);
      handles.delete(d2);
      expect(proxy.tunnels).toBe(before);
    } finally {
      await d?.cleanup();
      removeDir(dir);
      await proxy.stop();
    }
  }, TIMEOUT);
});
