import { describe, expect, test } from "bun:test";
import { mountAt, mountsUnder, parseMountinfo } from "../../src/util/mountinfo.ts";

const SAMPLE = [
  "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw",
  "60 22 0:53 / /mnt/my\\040bucket rw,nosuid shared:2 - fuse.bucketfs bucketfs:b rw,user_id=0",
  "61 60 254:1 /cache/.b/work /mnt/my\\040bucket/work rw shared:1 - ext4 /dev/vda rw",
  "62 22 0:54 / /mnt/other rw - fuse.s3fs s3fs rw",
].join("\n");

describe("mountinfo", () => {
  test("parses fields and unescapes octal escapes", () => {
    const m = parseMountinfo(SAMPLE);
    expect(m).toHaveLength(4);
    expect(m[1]).toMatchObject({ id: 60, parentId: 22, dev: "0:53", mountpoint: "/mnt/my bucket", fstype: "fuse.bucketfs", source: "bucketfs:b" });
    expect(m[2]?.root).toBe("/cache/.b/work");
  });

  test("mountsUnder lists deepest first, mountAt finds the exact one", () => {
    const m = parseMountinfo(SAMPLE);
    expect(mountsUnder("/mnt/my bucket/", m).map((x) => x.mountpoint)).toEqual(["/mnt/my bucket/work", "/mnt/my bucket"]);
    expect(mountAt("/mnt/other", m)?.fstype).toBe("fuse.s3fs");
    expect(mountAt("/mnt/none", m)).toBeUndefined();
  });
});
