/**
 * systemd readiness notification (`Type=notify`): datagrams to $NOTIFY_SOCKET.
 *
 * Is: the sd_notify protocol over a libc AF_UNIX datagram socket (no libsystemd needed):
 * READY=1 once every mount is usable, STOPPING=1, STATUS=..., EXTEND_TIMEOUT_USEC while
 * uploading. Does nothing when NOTIFY_SOCKET is unset. Is not: a watchdog.
 */
import { libc } from "../sys/libc.ts";
import { logger } from "../util/log.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SUN_PATH_MAX = 108;

export interface Notifier {
  send(state: string): void;
}

export function notifier(socketPath = process.env.NOTIFY_SOCKET): Notifier {
  if (!socketPath) return { send: () => {} };
  const path = socketPath.startsWith("@") ? "\0" + socketPath.slice(1) : socketPath;
  const pathBytes = Buffer.from(path, "utf8");
  if (pathBytes.length >= SUN_PATH_MAX) {
    logger("notify").warn("NOTIFY_SOCKET path too long; readiness will not be reported");
    return { send: () => {} };
  }
  // struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; }
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  pathBytes.copy(addr, 2);
  const addrLen = 2 + pathBytes.length + (path.startsWith("\0") ? 0 : 1);
  return {
    send(state: string) {
      const fd = libc().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return;
      const msg = Buffer.from(state, "utf8");
      if (libc().sendto(fd, msg, msg.length, 0, addr, addrLen) < 0) logger("notify").debug(`sd_notify failed: ${state}`);
      libc().close(fd);
    },
  };
}
