/**
 * The benchmark's S3 server: MinIO from test/helpers/s3server.ts on 127.0.0.1, or — with
 * `--latency` — MinIO inside a network namespace of our own, reached over a veth pair whose
 * two ends carry netem delay (half the requested round-trip time on each end).
 *
 * Addresses: only ones this module creates itself, on the veth pair it creates: a /30 out of
 * 198.18.0.0/15 (RFC 2544, "benchmarking"), chosen so that it overlaps nothing configured on
 * this machine. Nothing else is ever contacted. When the namespace, the veth pair or the netem
 * qdisc cannot be created, the reason is returned in `note` and the server runs on loopback
 * without added latency.
 *
 * Is: setup/teardown of the server and its network. Is not: a general S3 server launcher.
 */
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import type { Subprocess } from "bun";
import { startS3Server, TEST_ROOT, type S3Server } from "../../test/helpers/s3server.ts";
import { s3tool } from "../../test/helpers/s3tool.ts";
import { sh, shSync, sleep } from "./util.ts";

const REPO = resolve(import.meta.dir, "..", "..");

export interface BenchServer {
  server: S3Server;
  /** Added round-trip latency actually in effect, in ms (0 when none). */
  latencyMs: number;
  /** How the server runs, and why latency was not added when it was asked for. */
  note: string;
  stop(): Promise<void>;
}

/** Teardown steps for whatever network setup exists right now (also run from exit hooks). */
const netTeardown: Array<() => void> = [];
export function teardownNetworkSync(): void {
  while (netTeardown.length > 0) netTeardown.pop()?.();
}

export async function startBenchServer(latencyMs: number | undefined): Promise<BenchServer> {
  if (latencyMs === undefined) {
    const server = await startS3Server();
    return { server, latencyMs: 0, note: `${server.kind} on ${server.endpoint} (loopback)`, stop: () => server.stop() };
  }
  const tried = await tryNetns(latencyMs);
  if (typeof tried !== "string") return tried;
  console.log(`WARNING: ${tried}; running without added latency`);
  const server = await startS3Server();
  return {
    server,
    latencyMs: 0,
    note: `${server.kind} on ${server.endpoint} (loopback). --latency ${latencyMs}ms was asked for but not applied: ${tried}`,
    stop: () => server.stop(),
  };
}

/** A /30 in 198.18.0.0/15 that no address or route on this machine touches, or undefined. */
function pickSubnet(): { host: string; ns: string } | undefined {
  const addrs = shSync("ip -4 -o addr show; ip -4 route show table all").out;
  for (let i = 0; i < 50; i++) {
    const b = 18 + (i % 2);
    const c = 200 + Math.floor(Math.random() * 50);
    const d = 4 * Math.floor(Math.random() * 60);
    const net = `198.${b}.${c}.`;
    if (addrs.includes(`198.${b}.${c}.`) || addrs.includes(`198.${b}.0.0/15`) || addrs.includes("198.18.0.0/15")) continue;
    return { host: `${net}${d + 1}`, ns: `${net}${d + 2}` };
  }
  return undefined;
}

/** Returns a running server in a namespace, or the reason it could not be done. */
async function tryNetns(latencyMs: number): Promise<BenchServer | string> {
  const bin = join(REPO, ".build", "bin", "minio");
  if (!existsSync(bin)) return "latency mode needs MinIO (.build/bin/minio), which is missing";
  const tag = `${process.pid % 100000}`;
  const ns = `bfsbench-${tag}`;
  const vh = `bfsb${tag}h`;
  const vn = `bfsb${tag}n`;
  const sub = pickSubnet();
  if (!sub) return "no free /30 in 198.18.0.0/15 for the veth pair";

  const add = await sh(`ip netns add ${ns}`, { allowFail: true });
  if (add.code !== 0) return `cannot create a network namespace (${add.err.trim()})`;
  netTeardown.push(() => {
    shSync(`ip netns del ${ns}`);
  });
  const steps = [
    `ip link add ${vh} type veth peer name ${vn}`,
    `ip link set ${vn} netns ${ns}`,
    `ip addr add ${sub.host}/30 dev ${vh}`,
    `ip link set ${vh} up`,
    `ip -n ${ns} addr add ${sub.ns}/30 dev ${vn}`,
    `ip -n ${ns} link set ${vn} up`,
    `ip -n ${ns} link set lo up`,
  ];
  for (const s of steps) {
    const r = await sh(s, { allowFail: true });
    if (r.code !== 0) {
      teardownNetworkSync();
      return `cannot set up the veth pair (${s}: ${r.err.trim()})`;
    }
    if (s.startsWith("ip link add")) netTeardown.push(() => void shSync(`ip link del ${vh} 2>/dev/null`));
  }
  if (latencyMs > 0) {
    const half = `${(latencyMs / 2).toFixed(3)}ms`;
    for (const s of [`tc qdisc add dev ${vh} root netem delay ${half}`, `tc -n ${ns} qdisc add dev ${vn} root netem delay ${half}`]) {
      const r = await sh(s, { allowFail: true });
      if (r.code !== 0) {
        teardownNetworkSync();
        return `cannot add netem delay (${s}: ${r.err.trim()}; this kernel may lack CONFIG_NET_SCH_NETEM)`;
      }
    }
  }

  // MinIO inside the namespace, listening on the namespace's own veth address only.
  mkdirSync(TEST_ROOT, { recursive: true });
  const dataDir = mkdtempSync(join(TEST_ROOT, "s3-netns-"));
  const storage = join(dataDir, "storage");
  mkdirSync(storage, { recursive: true });
  const logFile = join(dataDir, "server.log");
  const port = 9000;
  const accessKey = `bfsbench${randomBytes(4).toString("hex")}`;
  const secretKey = `bfsbench-secret-${randomBytes(8).toString("hex")}`;
  const logFd = openSync(logFile, "a");
  let proc: Subprocess;
  try {
    proc = Bun.spawn({
      cmd: ["setpriv", "--pdeathsig", "KILL", "--", "ip", "netns", "exec", ns, bin, "server", "--quiet",
        "--address", `${sub.ns}:${port}`, "--console-address", `${sub.ns}:${port + 1}`, storage],
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: process.env.HOME ?? "/root",
        MINIO_ROOT_USER: accessKey,
        MINIO_ROOT_PASSWORD: secretKey,
        MINIO_BROWSER: "off",
        MINIO_UPDATE: "off",
        MINIO_REGION: "us-east-1",
        MINIO_CALLHOME_ENABLE: "off",
      },
      cwd: dataDir,
      stdin: "ignore",
      stdout: logFd,
      stderr: logFd,
    });
  } finally {
    closeSync(logFd);
  }
  let alive = true;
  void proc.exited.then(() => (alive = false));
  netTeardown.unshift(() => {
    // Runs last (teardown pops from the end): the server must die before its namespace goes.
    rmSync(dataDir, { recursive: true, force: true });
  });
  netTeardown.push(() => {
    try {
      proc.kill("SIGKILL");
    } catch {
      /* gone */
    }
  });
  const endpoint = `http://${sub.ns}:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (!alive) {
      teardownNetworkSync();
      return `MinIO exited early in the namespace: ${readFileSync(logFile, "utf8").slice(-1000)}`;
    }
    try {
      const r = await fetch(`${endpoint}/minio/health/ready`, { signal: AbortSignal.timeout(2000) });
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      teardownNetworkSync();
      return "MinIO in the namespace did not become ready within 60 s";
    }
    await sleep(200);
  }
  // Round trip of a tiny HTTP request (median of 5), to show the delay is in effect.
  const rtts: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    try {
      await (await fetch(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(5000) })).arrayBuffer();
      rtts.push(performance.now() - t);
    } catch {
      /* reported as n/a */
    }
  }
  rtts.sort((a, b) => a - b);
  const rtt = rtts.length ? `HTTP request round trip ${(rtts[Math.floor(rtts.length / 2)] ?? 0).toFixed(1)} ms (median of ${rtts.length})` : "";
  const server: S3Server = {
    endpoint,
    port,
    accessKey,
    secretKey,
    region: "us-east-1",
    dataDir,
    logFile,
    kind: "minio",
    get pid(): number | undefined {
      return alive ? proc.pid : undefined;
    },
    async stop(): Promise<void> {
      teardownNetworkSync();
      await proc.exited;
    },
    async restart(): Promise<void> {
      throw new Error("restart() is not supported for the namespaced bench server");
    },
    async createBucket(name: string): Promise<void> {
      await s3tool(server).mkbucket(name);
    },
  };
  return {
    server,
    latencyMs,
    note:
      `minio in network namespace ${ns} at ${endpoint} over veth ${vh}<->${vn}, ` +
      `netem ${latencyMs > 0 ? `delay ${latencyMs / 2} ms on each end (+${latencyMs} ms RTT)` : "not added (0 ms)"}; ${rtt || "round trip n/a"}`,
    stop: () => server.stop(),
  };
}
