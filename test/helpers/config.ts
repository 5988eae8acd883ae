/**
 * Config test helper: the ConfigError a config text is refused with.
 * Is: a helper for the config unit tests. Is not: a config fixture.
 */
import { ConfigError, parseConfig } from "../../src/config/load.ts";

/** The ConfigError `parseConfig(text, file)` throws; fails the test if it accepts the text. */
export function configFails(text: string, file: string): ConfigError {
  try {
    parseConfig(text, file);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}
