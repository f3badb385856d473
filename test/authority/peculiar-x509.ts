// Loads @peculiar/x509 for tests that read certificates with a second, independent parser.
// @peculiar/x509 2.x loads tsyringe, which needs a Reflect metadata polyfill before import.
import 'reflect-metadata'

const x509 = await import('@peculiar/x509')
x509.cryptoProvider.set(globalThis.crypto)

export { x509 }
