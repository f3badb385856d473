import { mkdirSync } from 'node:fs'
import { lstat, unlink } from 'node:fs/promises'
import { connect } from 'node:net'
import { dirname, isAbsolute } from 'node:path'
import { WritError } from '../errors.js'

/**
 * Maximum Unix socket path length on Linux: `sun_path` has room for 108 bytes including the
 * terminating NUL. macOS allows 104, so paths near the limit may still fail there at bind time.
 */
export const MAX_SOCKET_PATH_BYTES = 107

/**
 * Parses a Workload API address of the form `unix:///ABSOLUTE/PATH` (or `unix:/ABSOLUTE/PATH`)
 * and returns the socket path. The SPIFFE Workload Endpoint rules forbid an authority, query or
 * fragment. TCP addresses are valid SPIFFE endpoints but Writ serves Unix sockets only, so
 * `tcp://` is rejected too. Throws `agent.workload_api_address_invalid` naming the value.
 *
 * @example
 *   parseWorkloadApiAddress('unix:///run/writ/agent.sock') // '/run/writ/agent.sock'
 */
export function parseWorkloadApiAddress(text: string): string {
  const invalid = (reason: string) =>
    new WritError(
      'agent.workload_api_address_invalid',
      `invalid Workload API address "${text}": ${reason}; expected unix:///ABSOLUTE/PATH, such as unix:///run/writ/agent.sock`,
      { address: text, reason },
    )
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw invalid('it is not a URI')
  }
  if (url.protocol !== 'unix:') throw invalid(`the scheme "${url.protocol}" is not supported`)
  if (url.host !== '' || url.username !== '' || url.password !== '') {
    throw invalid('a unix URI must not name a host')
  }
  if (url.search !== '' || url.hash !== '') throw invalid('a query or fragment is not allowed')
  const path = decodeURIComponent(url.pathname)
  if (!isAbsolute(path) || path === '/' || path.endsWith('/')) {
    throw invalid('the path must name a socket file')
  }
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw invalid(`the socket path is longer than ${MAX_SOCKET_PATH_BYTES} bytes`)
  }
  return path
}

/**
 * Makes `path` ready to bind: creates a missing parent directory with mode 0700 and removes a
 * socket left behind by an agent that did not stop cleanly. Throws
 * `agent.workload_api_socket_in_use` when a process still accepts connections on it, and
 * `agent.workload_api_socket_invalid` when the path is something other than a socket.
 */
export async function prepareSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  let isSocket: boolean
  try {
    isSocket = (await lstat(path)).isSocket()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
    throw error
  }
  if (!isSocket) {
    throw new WritError(
      'agent.workload_api_socket_invalid',
      `${path} exists and is not a socket; remove it or choose another --workload-api path`,
      { path },
    )
  }
  if (await acceptsConnections(path)) {
    throw new WritError(
      'agent.workload_api_socket_in_use',
      `another process is serving on ${path}; stop it or choose another --workload-api path`,
      { path },
    )
  }
  await unlink(path)
}

/** Reports whether something listens on the socket; a refused connection means it is stale. */
function acceptsConnections(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}
