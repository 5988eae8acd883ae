/**
 * The libc calls bucketfs makes on the /dev/fuse descriptor itself: the passthrough ioctls and
 * the functions handed to libfuse as its custom I/O (writev/read/splice).
 *
 * Is: a small FFI table (FUSE-specific, so it lives in fuse/ rather than in the generic libc
 * bindings), errno access for it, and the two backing-file ioctls as functions that return
 * an id or a negative errno. Is not: the decision when to use passthrough (passthrough.ts).
 */
import { dlopen, FFIType, read, type Pointer } from "bun:ffi";
import { cstr } from "../sys/libc.ts";
import { BACKING_MAP, DEV_IOC, view } from "./structs.ts";

const DEV_SYMBOLS = {
  // int ioctl(int fd, unsigned long request, ...): called with one pointer argument.
  ioctl: { args: [FFIType.i32, FFIType.u64_fast, FFIType.ptr], returns: FFIType.i32 },
  writev: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i64_fast },
  read: { args: [FFIType.i32, FFIType.ptr, FFIType.u64_fast], returns: FFIType.i64_fast },
  splice: {
    args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.u64_fast, FFIType.u32],
    returns: FFIType.i64_fast,
  },
  __errno_location: { args: [], returns: FFIType.ptr },
  dlsym: { args: [FFIType.ptr, FFIType.cstring], returns: FFIType.ptr },
} as const;

const openDev = () => dlopen("libc.so.6", DEV_SYMBOLS);
let lib: ReturnType<typeof openDev> | undefined;

export function dev(): ReturnType<typeof openDev>["symbols"] {
  lib ??= openDev();
  return lib.symbols;
}

/** errno of the calling thread, right after a libc or libfuse call. */
export function errno(): number {
  const p = dev().__errno_location();
  return p === null ? 0 : read.i32(p as Pointer, 0);
}

/** Native function pointers libfuse may call directly (no JS on the per-reply path). */
export function nativeIo(): { writev: number; read: number; splice: number } {
  const s = dev();
  const sym = (name: string): number => {
    const p = s.dlsym(null, cstr(name)); // RTLD_DEFAULT: libc is loaded in every process
    if (!p) throw new Error(`dlsym(${name}) failed`);
    return Number(p);
  };
  return { writev: sym("writev"), read: sym("read"), splice: sym("splice") };
}

const mapBuf = new Uint8Array(BACKING_MAP.size);
const idBuf = new Uint32Array(1);

/** FUSE_DEV_IOC_BACKING_OPEN: a backing id (>= 1) for the open file `fd`, or -errno. */
export function backingOpen(devFd: number, fd: number): number {
  mapBuf.fill(0);
  view(mapBuf).setInt32(BACKING_MAP.fd, fd, true);
  const id = dev().ioctl(devFd, DEV_IOC.backingOpen, mapBuf);
  return id < 0 ? -errno() : id;
}

/** FUSE_DEV_IOC_BACKING_CLOSE: 0, or -errno. */
export function backingClose(devFd: number, id: number): number {
  idBuf[0] = id;
  return dev().ioctl(devFd, DEV_IOC.backingClose, idBuf) < 0 ? -errno() : 0;
}
