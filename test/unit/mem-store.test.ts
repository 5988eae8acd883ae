/** The in-memory fake passes the same ObjectStore contract as the real S3 store. */
import { MemStore } from "../helpers/mem-store.ts";
import { storeContract } from "../helpers/store-contract.ts";

storeContract("in-memory fake (test/helpers/mem-store.ts)", async () => {
  const store = new MemStore();
  return {
    store,
    seed: async (key, body, meta) => void store.put(key, body, meta ?? {}),
    read: async (key) => {
      const o = store.objects.get(key);
      return o ? { body: o.data, meta: o.meta } : null;
    },
    cleanup: async () => {},
  };
});
