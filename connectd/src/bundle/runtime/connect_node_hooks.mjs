// Module resolution hook for Node apps deployed by connectd.
//
// The app's files stay in the read-only bundle directory; npm installed its
// packages into <env_dir>/node_modules, this file's directory. require() finds
// them through NODE_PATH, but ES module `import` ignores NODE_PATH and only
// looks in node_modules directories above the importing file, none of which is
// <env_dir>. So when a bare specifier ("express", "@scope/pkg/sub") cannot be
// resolved from where it is imported, resolve it once more as if it were
// imported from <env_dir>. Whatever the bundle ships itself still wins, and
// packages inside <env_dir>/node_modules resolve each other natively.

const fallbackParent = new URL('./package.json', import.meta.url).href;

function isBare(specifier) {
  return !(
    specifier.startsWith('.') ||
    specifier.startsWith('/') ||
    specifier.startsWith('#') ||
    /^[a-zA-Z][a-zA-Z\d+.-]*:/.test(specifier)
  );
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    if (
      error?.code !== 'ERR_MODULE_NOT_FOUND' ||
      !isBare(specifier) ||
      context.parentURL === fallbackParent
    ) {
      throw error;
    }
    try {
      return await nextResolve(specifier, { ...context, parentURL: fallbackParent });
    } catch {
      // The first error names the file that imported the package: more
      // useful to the publisher than this retry's.
      throw error;
    }
  }
}
