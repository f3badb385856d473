// Loads @peculiar/x509 for tests that read certificates with a second, independent parser.
// NOTE: @peculiar/x509 2.x loads tsyringe, which throws at import unless a Reflect metadata
// polyfill (such as the reflect-metadata package) is installed, and Writ depends on none. The
// three functions below are the ones tsyringe calls; they keep metadata per target in a map.
// Once reflect-metadata is a dev dependency, import it here instead.

type MetadataTarget = object
const metadata = new WeakMap<MetadataTarget, Map<unknown, unknown>>()
const reflect = Reflect as unknown as Record<string, unknown>

if (typeof reflect.getMetadata !== 'function') {
  const own = (key: unknown, target: MetadataTarget) => metadata.get(target)?.get(key)
  reflect.defineMetadata = (key: unknown, value: unknown, target: MetadataTarget) => {
    const entries = metadata.get(target) ?? new Map<unknown, unknown>()
    entries.set(key, value)
    metadata.set(target, entries)
  }
  reflect.getOwnMetadata = own
  reflect.getMetadata = (key: unknown, target: MetadataTarget) => {
    for (
      let current: MetadataTarget | null = target;
      current;
      current = Object.getPrototypeOf(current)
    ) {
      const value = own(key, current)
      if (value !== undefined) return value
    }
    return undefined
  }
}

const x509 = await import('@peculiar/x509')
x509.cryptoProvider.set(globalThis.crypto)

export { x509 }
