/** The `toolPinning` field of an McpServer manifest. */

import { expectString, FieldError, type FieldPath } from '../policy/fields.js'
import { TOOL_PINNING_MODES, type ToolPinningMode } from './tool-pins.js'

/**
 * Validates `toolPinning`: `trust-on-first-use` or `require-approval`.
 *
 * @example validateToolPinning('require-approval', ['spec', 'toolPinning'])
 */
export function validateToolPinning(value: unknown, path: FieldPath): ToolPinningMode {
  const mode = expectString(value, path)
  if (!(TOOL_PINNING_MODES as readonly string[]).includes(mode)) {
    throw new FieldError(
      path,
      `invalid tool pinning mode ${JSON.stringify(mode)}: use ${TOOL_PINNING_MODES.join(' or ')}`,
    )
  }
  return mode as ToolPinningMode
}
