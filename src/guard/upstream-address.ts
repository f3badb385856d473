import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns'
import { BlockList, isIP, type LookupFunction } from 'node:net'
import { WritError } from '../errors.js'

/** The non-public destinations one upstream may reach, from its McpServer manifest. */
export interface AddressAllowance {
  /** Allows loopback, link-local and private addresses, but never a cloud metadata address. */
  allowPrivateNetwork?: boolean
  /** Addresses or CIDR ranges (`10.1.0.0/16`, `fd00::/8`) allowed even though not public. */
  allowAddresses?: string[]
}

/** Host names of cloud metadata services, refused whatever the allowance contains. */
const METADATA_HOSTS = new Set(['metadata.google.internal', 'metadata.goog', 'metadata'])
/** Cloud metadata addresses: AWS, GCP and Azure (IPv4), AWS over IPv6, Alibaba Cloud. */
const METADATA_ADDRESSES = new Set(['169.254.169.254', 'fd00:ec2::254', '100.100.100.200'])

/** Address ranges that are not on the public internet, with the word used in error messages. */
const NON_PUBLIC_RANGES: Array<[string, number, 'ipv4' | 'ipv6', string]> = [
  ['0.0.0.0', 8, 'ipv4', 'unspecified'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['10.0.0.0', 8, 'ipv4', 'private'],
  ['172.16.0.0', 12, 'ipv4', 'private'],
  ['192.168.0.0', 16, 'ipv4', 'private'],
  ['100.64.0.0', 10, 'ipv4', 'shared (carrier-grade NAT)'],
  ['192.0.0.0', 24, 'ipv4', 'reserved'],
  ['198.18.0.0', 15, 'ipv4', 'reserved'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['fc00::', 7, 'ipv6', 'private (unique local)'],
  ['ff00::', 8, 'ipv6', 'multicast'],
  ['64:ff9b::', 96, 'ipv6', 'NAT64 (embedded IPv4)'],
]

const RANGE_LISTS = NON_PUBLIC_RANGES.map(([network, prefix, family, label]) => {
  const list = new BlockList()
  list.addSubnet(network, prefix, family)
  return { list, label }
})

/**
 * Returns why `address` (a literal IP) must not be reached, or undefined when it may. Metadata
 * addresses are always refused; other non-public addresses only without an allowance.
 */
export function addressRefusal(
  address: string,
  allowance: AddressAllowance = {},
): string | undefined {
  const plain = unwrapMappedIpv4(address.replace(/^\[|\]$/g, '').toLowerCase())
  const family = isIP(plain) === 6 ? 'ipv6' : 'ipv4'
  if (isIP(plain) === 0) return `${JSON.stringify(address)} is not an IP address`
  if (METADATA_ADDRESSES.has(plain)) return `${plain} is a cloud metadata address`
  if (allowedExplicitly(plain, family, allowance.allowAddresses)) return undefined
  const range = RANGE_LISTS.find(({ list }) => list.check(plain, family))
  if (range === undefined || allowance.allowPrivateNetwork === true) return undefined
  return `${plain} is a ${range.label} address`
}

/**
 * Checks an upstream URL before any connection: the scheme, a metadata host name, and a literal IP
 * host. Host names are checked again, address by address, when they are resolved at connect time.
 * Throws `gateway.upstream_address_refused` naming the server and the address.
 */
export function checkUpstreamUrl(server: string, url: string, allowance: AddressAllowance = {}) {
  const reason = urlRefusal(url, allowance)
  if (reason !== undefined) throw refused(server, url, reason)
}

/** Returns why the host of an http or https URL must not be reached, or undefined when it may. */
export function urlRefusal(url: string, allowance: AddressAllowance = {}): string | undefined {
  const parsed = new URL(url)
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return `${parsed.protocol} is not http or https`
  }
  const host = parsed.hostname
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '')
    .toLowerCase()
  if (METADATA_HOSTS.has(host)) return `${host} is a cloud metadata host`
  if (isIP(host) !== 0) return addressRefusal(host, allowance)
  if (host === 'localhost' || host.endsWith('.localhost')) {
    if (addressRefusal('127.0.0.1', allowance) !== undefined) return `${host} is a loopback name`
  }
  return undefined
}

/**
 * Wraps a DNS lookup so every resolved address is checked at connect time. A host name that
 * resolves to a refused address fails the connection before any byte is sent. Because the check
 * runs on each connection, it also covers records that change after the URL was checked.
 */
export function guardedLookup(
  server: string,
  allowance: AddressAllowance = {},
  resolve: typeof dnsLookup = dnsLookup,
): LookupFunction {
  return function lookupUpstream(hostname, options, callback) {
    const all: LookupAllOptions = { ...(options as object), all: true }
    resolve(hostname, all, (error, addresses: LookupAddress[]) => {
      if (error) {
        callback(error, '', 0)
        return
      }
      for (const entry of addresses) {
        const reason = addressRefusal(entry.address, allowance)
        if (reason !== undefined) {
          callback(refused(server, hostname, reason) as NodeJS.ErrnoException, '', 0)
          return
        }
      }
      if ((options as { all?: boolean }).all === true) {
        ;(callback as unknown as (e: null, list: LookupAddress[]) => void)(null, addresses)
        return
      }
      const first = addresses[0]
      if (first === undefined) {
        callback(new Error(`no address found for ${hostname}`), '', 0)
        return
      }
      callback(null, first.address, first.family)
    })
  }
}

/** Validates an `allowAddresses` entry: an IP address or a CIDR range; returns a message if not. */
export function invalidAllowedAddress(entry: string): string | undefined {
  const [address = '', prefix, extra] = entry.split('/')
  const version = isIP(address)
  if (version === 0 || extra !== undefined) {
    return `invalid address ${JSON.stringify(entry)}: expected an IP address or a CIDR range such as 10.0.0.0/8`
  }
  if (prefix === undefined) return undefined
  const bits = Number(prefix)
  const most = version === 4 ? 32 : 128
  if (!/^\d{1,3}$/.test(prefix) || bits > most) {
    return `invalid prefix length in ${JSON.stringify(entry)}: expected 0 to ${most}`
  }
  return undefined
}

function allowedExplicitly(address: string, family: 'ipv4' | 'ipv6', entries?: string[]) {
  if (entries === undefined || entries.length === 0) return false
  const list = new BlockList()
  for (const entry of entries) {
    if (invalidAllowedAddress(entry) !== undefined) continue
    const [network = '', prefix] = entry.split('/')
    const entryFamily = isIP(network) === 6 ? 'ipv6' : 'ipv4'
    if (prefix === undefined) list.addAddress(network, entryFamily)
    else list.addSubnet(network, Number(prefix), entryFamily)
  }
  return list.check(address, family)
}

/**
 * Turns an IPv4-mapped IPv6 address (`::ffff:169.254.169.254`, or `::ffff:a9fe:a9fe` as URLs
 * write it) into the IPv4 address, so it gets the IPv4 rules.
 */
function unwrapMappedIpv4(address: string): string {
  const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address)
  if (dotted) return dotted[1]!
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(address)
  if (!hex) return address
  const high = Number.parseInt(hex[1]!, 16)
  const low = Number.parseInt(hex[2]!, 16)
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.')
}

function refused(server: string, target: string, reason: string): WritError {
  return new WritError(
    'gateway.upstream_address_refused',
    `upstream server "${server}" may not connect to ${target}: ${reason}; ${refusalHint(reason)}`,
    { server, target, reason },
  )
}

/** Returns what an operator can do about a refused address. */
export function refusalHint(reason: string): string {
  // Metadata services hand out cloud credentials, so no manifest setting allows them.
  if (reason.includes('metadata')) return 'cloud metadata services are never reachable through Writ'
  return 'if this upstream is intended, set http.allowPrivateNetwork or http.allowAddresses in its McpServer manifest'
}
