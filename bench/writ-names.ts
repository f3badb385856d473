/** Names shared by the benchmark runner and the Writ child process. */

/** The `McpServer` that fronts the stdio echo server, one process per client session. */
export const STDIO_SERVER_NAME = 'bench-stdio'

/** The `McpServer` that fronts the Streamable HTTP echo server. */
export const HTTP_SERVER_NAME = 'bench-http'

/** The message the Writ child process sends over IPC once its identity files are written. */
export interface WritReady {
  type: 'ready'
  /** `HOST:PORT` of Writ's HTTPS listener. */
  address: string
  /** The folder that contains `svid.pem`, `svid_key.pem` and `bundle.pem`. */
  identityDir: string
}
