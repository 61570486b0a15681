/**
 * Loads an optional peer dependency of a deep entry point, or throws an error that says how to
 * install it. `load` is the entry point's own `() => import('name')`, so that the import stays
 * visible to bundlers and is compiled to `require()` in the CommonJS build.
 */
export async function loadOptionalPeer<T>(
  name: string,
  entry: string,
  load: () => Promise<T>,
): Promise<T> {
  try {
    return await load();
  } catch (error) {
    if (isNotFound(error, name)) {
      throw new Error(
        `${entry} needs "${name}", an optional peer dependency that is not installed: npm install ${name}`,
        { cause: error },
      );
    }
    throw error;
  }
}

/** A "module not found" error about `name` itself, not about one of its own dependencies. */
export function isNotFound(error: unknown, name: string): boolean {
  if (typeof error !== 'object' || error === null) {
    return false;
  }
  const { code, message } = error as { code?: unknown; message?: unknown };
  return (
    (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') &&
    typeof message === 'string' &&
    (message.includes(`'${name}'`) || message.includes(`"${name}"`))
  );
}
