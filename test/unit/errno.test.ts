import { describe, expect, test } from "bun:test";
import { E, FsError, toErrno } from "../../src/fs/errors.ts";
import { StoreError } from "../../src/store/types.ts";

describe("toErrno: the one mapping to errno", () => {
  test("FsError carries its own errno", () => {
    expect(toErrno(new FsError(E.EROFS, "ro"))).toBe(30);
    expect(toErrno(new FsError(E.ENOENT, "x"))).toBe(2);
  });
  test("store errors", () => {
    expect(toErrno(new StoreError("not-found", "x"))).toBe(E.ENOENT);
    expect(toErrno(new StoreError("access-denied", "x"))).toBe(E.EACCES);
    expect(toErrno(new StoreError("precondition", "x"))).toBe(E.ESTALE);
    expect(toErrno(new StoreError("network", "x"))).toBe(E.EIO);
    expect(toErrno(new StoreError("aborted", "x"))).toBe(E.EINTR);
  });
  test("local system errors keep their code; anything else is EIO", () => {
    expect(toErrno(Object.assign(new Error("disk full"), { code: "ENOSPC" }))).toBe(28);
    expect(toErrno(new Error("boom"))).toBe(E.EIO);
    expect(toErrno("string")).toBe(E.EIO);
  });
});
