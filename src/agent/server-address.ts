import { isIP } from 'node:net'
import { WritError } from '../errors.js'

/** A Writ server address split from `HOST:PORT`; `text` is the form shown in messages. */
export interface ServerAddress {
  host: string
  port: number
  text: string
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `IPv4:PORT`. Throws `agent.server_invalid` naming the value.
 *
 * @example
 *   parseServerAddress('[::1]:7443') // { host: '::1', port: 7443, text: '[::1]:7443' }
 */
export function parseServerAddress(text: string): ServerAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text.trim())
  const host = match?.[1] ?? match?.[2]
  const port = Number(match?.[3])
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new WritError(
      'agent.server_invalid',
      `invalid server address "${text}": expected HOST:PORT, such as 127.0.0.1:7443 or [::1]:7443`,
      { server: text },
    )
  }
  if (match?.[1] !== undefined && isIP(host) !== 6) {
    throw new WritError(
      'agent.server_invalid',
      `invalid server address "${text}": brackets must hold an IPv6 address`,
      { server: text },
    )
  }
  const shown = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`
  return { host, port, text: shown }
}

/** Reports whether the host is an IP literal, where TLS sends no server name indication. */
export function isIpHost(host: string): boolean {
  return isIP(host) !== 0
}
