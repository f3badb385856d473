import { generateKeyPairSync } from 'node:crypto'

/** Fake credentials shaped like real ones, keyed by the detector expected to find each. */
export interface FakeSecrets {
  awsAccessKey: string
  awsSecretKey: string
  githubToken: string
  jwt: string
  slackToken: string
  googleApiKey: string
  stripeKey: string
  bearer: string
  apiKey: string
  privateKey: string
}

function base64url(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

/**
 * Builds fake secrets. Prefixes are joined at run time so that secret scanners reading this file
 * do not mistake it for a leak. The AWS pair is the example pair from the AWS documentation; the
 * private key is a fresh P-256 key.
 */
export function fakeSecrets(): FakeSecrets {
  return {
    awsAccessKey: ['AKIA', 'IOSFODNN7EXAMPLE'].join(''),
    awsSecretKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    githubToken: ['ghp', 'Xk9qLm2ZpR7v'.repeat(3)].join('_'),
    jwt: [
      base64url({ alg: 'HS256', typ: 'JWT' }),
      base64url({ sub: 'agent-1' }),
      'c2lnbmF0dXJl',
    ].join('.'),
    slackToken: ['xoxb', '1234567890', 'AbCdEfGhIjKlMnOp'].join('-'),
    googleApiKey: ['AI', 'za', 'SyD4mN8qR2tV6xZ0bC3fH7jK1lP5sW9yAbc'].join(''),
    stripeKey: ['sk', 'live', '4eC39HqLyjWDarjtT1zdp7dc'].join('_'),
    bearer: 'N7pQ2xR9vL4kT8mZ3wY6bC1dF5gH0jS',
    apiKey: 'q8Zr3LmX7vT2pK9wN4bY6cF1dH5jS0aE',
    privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString(),
  }
}
