/**
 * The benchmark's S3 server: MinIO from test/helpers/s3server.ts on 127.0.0.1, or — with
 * `--latency` and/or `--rate` — MinIO inside a network namespace of our own, reached over a veth
 * pair whose two ends carry netem delay (half the requested round-trip time on each end) and a
 * rate limit (tbf, or netem's rate when netem is there). Where the kernel has no netem, the
 * latency comes from bench/lib/delay-proxy.go (built here with `go build` into
 * .build/bin/delay-proxy) on 127.0.0.1 in front of the veth (said so in `note`). The link is
 * shaped only once `shape()` is called (after the data is loaded).
 *
 * Addresses: only ones this module creates itself, on the veth pair it creates: a /30 out of
 * 198.18.0.0/15 (RFC 2544, "benchmarking"), chosen so that it overlaps nothing configured on
 * this machine. Nothing else is ever contacted. When the namespace, the veth pair or the netem
 * qdisc cannot be created, the reason is returned in `note` and the server runs on loopback
 * without added latency.
 *
 * Is: setup/teardown of the server and its network. Is not: a general S3 server launcher.
 */
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, statSync } from "node:fs";
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
  /** The delay proxy's pid, when it adds the latency (its CPU is the link's, which a real link does not cost). */
  delayPid?: number;
  /** Rate limit in effect on the link, Mbit/s each way (undefined: none). */
  rateMbit?: number;
  /** Turns the latency and rate on (they are off while the data is loaded). */
  shape(): Promise<void>;
  /** How the server runs, and why latency was not added when it was asked for. */
  note: string;
  stop(): Promise<void>;
}

/** .build/bin/delay-proxy, built from bench/lib/delay-proxy.go when missing or older than it; or why not. */
function buildDelayProxy(): { path: string; error?: undefined } | { path?: undefined; error: string } {
  const src = join(REPO, "bench", "lib", "delay-proxy.go");
  const bin = join(REPO, ".build", "bin", "delay-proxy");
  if (existsSync(bin) && statSync(bin).mtimeMs >= statSync(src).mtimeMs) return { path: bin };
  const r = Bun.spawnSync(["go", "build", "-o", bin, src], { stdout: "pipe", stderr: "pipe", env: { ...process.env, GO111MODULE: "off" } });
  if (r.exitCode !== 0) return { error: `cannot build the delay proxy (go build bench/lib/delay-proxy.go: ${new TextDecoder().decode(r.stderr).trim() || `exit ${r.exitCode}`})` };
  return { path: bin };
}

/** Teardown steps for whatever network setup exists right now (also run from exit hooks). */
const netTeardown: Array<() => void> = [];
export function teardownNetworkSync(): void {
  while (netTeardown.length > 0) netTeardown.pop()?.();
}

export async function startBenchServer(latencyMs: number | undefined, rateMbit?: number): Promise<BenchServer> {
  if (latencyMs === undefined && rateMbit === undefined) {
    const server = await startS3Server();
    return { server, latencyMs: 0, shape: async () => {}, note: `${server.kind} on ${server.endpoint} (loopback)`, stop: () => server.stop() };
  }
  const tried = await tryNetns(latencyMs ?? 0, rateMbit);
  if (typeof tried !== "string") return tried;
  console.log(`WARNING: ${tried}; running without added latency`);
  const server = await startS3Server();
  return {
    server,
    latencyMs: 0,
    shape: async () => {},
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
async function tryNetns(latencyMs: number, rateMbit: number | undefined): Promise<BenchServer | string> {
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
  // The qdiscs are made now (so a kernel without them is found before MinIO starts) and
  // shaped later: a rate and delay of 0 until shape().
  const half = `${(latencyMs / 2).toFixed(3)}ms`;
  let netemOk = false;
  let useProxyDelay = false;
  const ends: [string, string][] = [[vh, ""], [vn, `-n ${ns} `]];
  const qdisc = (verb: "add" | "change", on: boolean): string[] =>
    ends.map(([dev, n]) => {
      if (netemOk) {
        const parts = [on && latencyMs > 0 ? `delay ${half}` : "delay 0ms", on && rateMbit ? `rate ${rateMbit}mbit` : ""];
        return `tc ${n}qdisc ${verb} dev ${dev} root netem ${parts.join(" ")} limit 100000`;
      }
      // tbf: burst of 10 ms worth (at least 64 KiB), queue up to 100 ms.
      const r = on && rateMbit ? rateMbit : 10_000;
      const burst = Math.max(64 * 1024, Math.round((r * 1e6) / 8 / 100));
      return `tc ${n}qdisc ${verb} dev ${dev} root tbf rate ${r}mbit burst ${burst} latency 100ms`;
    });
  if (latencyMs > 0 || rateMbit) {
    const probe = await sh(`tc qdisc add dev ${vh} root netem delay 0ms`, { allowFail: true });
    if (probe.code === 0) {
      netemOk = true;
      await sh(`tc qdisc del dev ${vh} root`, { allowFail: true });
    } else if (latencyMs > 0) {
      useProxyDelay = true;
    }
    if (netemOk || rateMbit) {
      for (const c of qdisc("add", false)) {
        const r = await sh(c, { allowFail: true });
        if (r.code !== 0) {
          teardownNetworkSync();
          return `cannot add the ${netemOk ? "netem" : "tbf"} qdisc (${c}: ${r.err.trim()})`;
        }
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
  const direct = `http://${sub.ns}:${port}`;
  let endpoint = direct;
  let delayProc: Subprocess | undefined;
  if (useProxyDelay) {
    const bin = buildDelayProxy();
    if (bin.error !== undefined) {
      teardownNetworkSync();
      return bin.error;
    }
    delayProc = Bun.spawn([bin.path, "0", sub.ns, String(port), String(latencyMs / 2)], {
      stdout: "pipe", stderr: "inherit", stdin: "ignore",
    });
    const reader = (delayProc.stdout as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    reader.releaseLock();
    const proxyPort = Number(new TextDecoder().decode(first.value ?? new Uint8Array()).trim());
    if (!(proxyPort > 0)) {
      teardownNetworkSync();
      return "the delay proxy (bench/lib/delay-proxy.go) did not start";
    }
    const dp = delayProc;
    netTeardown.push(() => {
      try {
        dp.kill("SIGKILL");
      } catch {
        /* gone */
      }
    });
    dp.kill("SIGUSR1"); // no delay while the data is loaded
    endpoint = `http://127.0.0.1:${proxyPort}`;
  }
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (!alive) {
      teardownNetworkSync();
      return `MinIO exited early in the namespace: ${readFileSync(logFile, "utf8").slice(-1000)}`;
    }
    try {
      const r = await fetch(`${direct}/minio/health/ready`, { signal: AbortSignal.timeout(2000) });
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
  // Round trip of a tiny HTTP request, to show the delay is in effect.
  const median = await medianRoundTripMs(endpoint);
  const rtt = median !== undefined ? `HTTP request round trip ${median.toFixed(1)} ms (median of 5)` : "";
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
  const how = [
    latencyMs > 0
      ? useProxyDelay
        ? `+${latencyMs} ms RTT from bench/lib/delay-proxy.go at ${endpoint} (this kernel has no netem: an approximation, no loss or slow start on the long link)`
        : `netem delay ${latencyMs / 2} ms on each end (+${latencyMs} ms RTT)`
      : "no added latency",
    rateMbit ? `${rateMbit} Mbit/s each way (${netemOk ? "netem rate" : "tbf"} on both veth ends)` : "no rate limit",
  ].join(", ");
  const bench: BenchServer = {
    server,
    latencyMs,
    ...(delayProc ? { delayPid: delayProc.pid } : {}),
    ...(rateMbit ? { rateMbit } : {}),
    async shape() {
      if (netemOk || rateMbit) for (const c of qdisc("change", true)) await sh(c);
      delayProc?.kill("SIGUSR2");
      const median = await medianRoundTripMs(endpoint);
      bench.note += `; shaped: HTTP request on a new connection ${median !== undefined ? `${median.toFixed(1)} ms` : "n/a"} (median of 5)`;
    },
    note: `minio in network namespace ${ns} at ${direct} over veth ${vh}<->${vn}; ${how}; unshaped ${rtt || "round trip n/a"}`,
    stop: () => server.stop(),
  };
  return bench;
}

/** The median time of 5 tiny HTTP requests to MinIO's health endpoint (ms), or undefined when none answered. */
async function medianRoundTripMs(endpoint: string): Promise<number | undefined> {
  const rtts: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    try {
      await (await fetch(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(5000) })).arrayBuffer();
      rtts.push(performance.now() - t);
    } catch {
      /* counted as no answer */
    }
  }
  rtts.sort((a, b) => a - b);
  return rtts.length ? rtts[Math.floor(rtts.length / 2)] : undefined;
}
