/**
 * The real S3 store against MinIO passes the ObjectStore contract (the same suite as the
 * in-memory fake). Seeded and read back with boto3 (test/helpers/s3tool.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createS3Store } from "../../src/store/s3.ts";
import { startS3Server, TEST_ROOT } from "../helpers/s3server.ts";
import { s3tool } from "../helpers/s3tool.ts";
import { storeContract } from "../helpers/store-contract.ts";

storeContract("S3 store on MinIO", async () => {
  const server = await startS3Server();
  const tool = s3tool(server);
  await server.createBucket("contract");
  const tmp = mkdtempSync(join(TEST_ROOT, "contract-"));
  const store = createS3Store({
    bucket: "contract", accessKeyId: server.accessKey, secretAccessKey: server.secretKey, region: server.region,
    endpoint: server.endpoint, partSize: 8 * 1024 * 1024, transferConcurrency: 4,
  });
  let n = 0;
  return {
    store,
    seed: async (key, body, meta) => void (await tool.put("contract", key, { bytes: body }, meta ? { metadata: meta } : {})),
    read: async (key) => {
      const head = await tool.head("contract", key);
      if (head === null) return null;
      const path = join(tmp, `read-${n++}`);
      await tool.get("contract", key, { path });
      return { body: new Uint8Array(readFileSync(path)), meta: head.metadata };
    },
    cleanup: async () => {
      await server.stop();
      rmSync(tmp, { recursive: true, force: true });
    },
  };
});
