import { type ServiceError, status } from '@grpc/grpc-js'
import { WritError } from '../errors.js'
import type { Logger } from '../log.js'

/** A failure of one Workload API call with the gRPC status code the client receives. */
export class WorkloadApiCallError extends Error {
  override name = 'WorkloadApiCallError'

  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message)
  }
}

/**
 * gRPC status per Writ error code, following the SPIFFE Workload Endpoint error rules.
 * InvalidArgument marks a bad request, which clients do not retry. PermissionDenied marks an
 * identity the caller may not have. Unavailable, the default, means the Writ server cannot help
 * right now, so clients retry with backoff.
 */
const STATUS_BY_CODE: Record<string, status> = {
  'jwt_svid.invalid': status.INVALID_ARGUMENT,
  'jwt_svid.key_unknown': status.INVALID_ARGUMENT,
  'jwt_svid.invalid_request': status.INVALID_ARGUMENT,
  'request.invalid': status.INVALID_ARGUMENT,
  'jwt_svid.forbidden': status.PERMISSION_DENIED,
  'jwt_svid.locked': status.PERMISSION_DENIED,
}

/**
 * Converts the error of a call to the status sent to the client and logs it. Writ errors keep
 * their message and get a code from the table above. Any other error is sent as Internal without
 * its message, because that message may describe the agent's internals.
 */
export function toGrpcError(error: unknown, method: string, logger: Logger): Partial<ServiceError> {
  if (error instanceof WorkloadApiCallError) {
    logger.info(
      { method, code: status[error.code], reason: error.message },
      'workload API call failed',
    )
    return { code: error.code, details: error.message }
  }
  if (error instanceof WritError) {
    const code = STATUS_BY_CODE[error.code] ?? status.UNAVAILABLE
    const level = code === status.UNAVAILABLE ? 'warn' : 'info'
    logger[level]({ method, code: status[code], error }, 'workload API call failed')
    return { code, details: error.message }
  }
  logger.error({ method, error }, 'workload API call failed unexpectedly')
  return { code: status.INTERNAL, details: 'internal error; see the Writ agent log' }
}
