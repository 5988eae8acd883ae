/**
 * A TCP forwarder that adds latency, for benchmark machines whose kernel has no netem
 * (`--latency` falls back to it): `bun bench/lib/delay-proxy.ts <listen-port> <target-host>
 * <target-port> <one-way-ms>`. It listens on 127.0.0.1 only, prints its port, and forwards
 * every connection to the target; each chunk, either way, leaves `one-way-ms` after it arrived
 * (order kept), and a new connection reaches the target after one round trip (the SYN and
 * SYN-ACK a real link would delay). SIGUSR1 switches the delay off, SIGUSR2 on again.
 *
 * What it models and what it does not: the per-request round trip (requests and answers wait
 * one RTT) and the delay of every byte; it keeps at most 8 MiB in flight per direction (the
 * reading side pauses above it), so throughput is bounded near 8 MiB per RTT like a TCP window
 * that autotuned to that size. It does not model loss or TCP's slow start on the long link:
 * figures over it are an approximation of a real long link, and the bench says so.
 * Is: a measurement aid on loopback. Is not: used by bucketfs or the tests.
 */
import { createServer, connect, type Socket } from "node:net";

const [portArg, host, targetPort, delayArg] = process.argv.slice(2);
if (!host || !targetPort || !delayArg) {
  console.error("usage: delay-proxy.ts <listen-port|0> <target-host> <target-port> <one-way-ms>");
  process.exit(2);
}
const oneWay = Number(delayArg);
let on = true;
process.on("SIGUSR1", () => (on = false));
process.on("SIGUSR2", () => (on = true));
const HIGH_WATER = 8 * 1024 * 1024;

/** Forwards `from` to `to`, each chunk `oneWay` ms late, pausing `from` above HIGH_WATER pending. */
function pipeDelayed(from: Socket, to: Socket): void {
  let pending = 0;
  from.on("data", (chunk: Buffer) => {
    pending += chunk.length;
    if (pending > HIGH_WATER) from.pause();
    const send = () => {
      if (!to.destroyed) to.write(chunk, () => {
        pending -= chunk.length;
        if (pending <= HIGH_WATER && from.isPaused()) from.resume();
      });
    };
    if (on && oneWay > 0) setTimeout(send, oneWay);
    else send();
  });
  from.on("end", () => setTimeout(() => to.end(), on ? oneWay : 0));
  from.on("error", () => to.destroy());
  from.on("close", () => setTimeout(() => to.destroy(), on ? oneWay + 5 : 5));
}

const server = createServer((client) => {
  client.pause();
  setTimeout(() => {
    const up = connect(Number(targetPort), host, () => {
      up.setNoDelay(true);
      client.setNoDelay(true);
      pipeDelayed(client, up);
      pipeDelayed(up, client);
      client.resume();
    });
    up.on("error", () => client.destroy());
    client.on("error", () => up.destroy());
  }, on ? 2 * oneWay : 0);
});
server.listen(Number(portArg ?? 0), "127.0.0.1", () => {
  const a = server.address();
  console.log(typeof a === "object" && a ? a.port : 0);
});
