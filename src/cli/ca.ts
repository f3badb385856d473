import { loadOrCreateJwtSvidKey } from '../authority/jwt-svid.js'
import {
  beginRotation,
  describeRotation,
  finishRotation,
  type RotationStatus,
  switchSigning,
} from '../authority/rotation.js'
import { openHost } from '../host.js'
import { formatDuration, parseDuration } from '../lib/duration.js'
import { type Command, DATA_DIR_OPTION, dataDirOption, JSON_OPTION, UsageError } from './command.js'

const PHASES = ['init', 'switch', 'finish'] as const
type Phase = (typeof PHASES)[number]

export const caRotateCommand: Command = {
  name: 'ca rotate',
  summary: 'rotate the CA in phases: init (add a new CA), switch (sign with it), finish',
  args: 'init|switch|finish',
  arity: [1, 1],
  details:
    'init     creates a new CA and adds it to the trust bundle; the current CA keeps signing.\n' +
    '         Agents receive the new bundle on their next renewal.\n' +
    'switch   makes the new CA sign new certificates and the server certificate. Allowed once\n' +
    '         every certificate issued before init has expired.\n' +
    'finish   removes the old CA from the bundle and deletes its key. Allowed once every\n' +
    '         certificate the old CA signed has expired. With --grace, the running server does\n' +
    '         this by itself.\n' +
    'A running writ start picks up each phase within a second.',
  options: {
    ...DATA_DIR_OPTION,
    grace: {
      type: 'string',
      value: 'DURATION',
      description:
        'with init or switch: retire the old CA automatically this long after the switch, such as 2h (default: run finish yourself)',
    },
    force: {
      type: 'boolean',
      description:
        'with switch or finish: skip the wait for older certificates to expire (their holders may lose access)',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const phase = parsePhase(input.positionals[0] as string)
    const grace = graceOption(input.values.grace, phase)
    const force = input.values.force === true
    if (force && phase === 'init') throw new UsageError('--force applies to switch and finish')
    const host = await openHost(dataDirOption(input))
    try {
      if (phase === 'init') {
        await beginRotation(host, grace === undefined ? {} : { graceSeconds: grace })
      } else if (phase === 'switch') {
        await switchSigning(host, {
          force,
          ...(grace === undefined ? {} : { graceSeconds: grace }),
        })
      } else {
        await finishRotation(host, { force })
      }
      const status = await describeRotation(host)
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(status, null, 2)}\n`)
        return 0
      }
      process.stdout.write(`${phaseSummary(phase, status)}\n\n${formatStatus(status)}`)
      return 0
    } finally {
      await host.close()
    }
  },
}

export const caStatusCommand: Command = {
  name: 'ca status',
  summary: 'show the CA rotation phase, the trusted CAs with their pins and the JWT key',
  options: { ...DATA_DIR_OPTION, ...JSON_OPTION },
  async run(input) {
    const host = await openHost(dataDirOption(input))
    try {
      const status = await describeRotation(host)
      const jwtKey = await loadOrCreateJwtSvidKey(host.dataDir)
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify({ ...status, jwtKeyId: jwtKey.kid }, null, 2)}\n`)
        return 0
      }
      process.stdout.write(`${formatStatus(status)}JWT signing key: kid ${jwtKey.kid}\n`)
      return 0
    } finally {
      await host.close()
    }
  },
}

function parsePhase(value: string): Phase {
  if ((PHASES as readonly string[]).includes(value)) return value as Phase
  throw new UsageError(`invalid phase "${value}": use init, switch or finish`)
}

function graceOption(value: unknown, phase: Phase): number | undefined {
  if (value === undefined) return undefined
  if (phase === 'finish') throw new UsageError('--grace applies to init and switch')
  return parseDuration(String(value), '--grace')
}

function phaseSummary(phase: Phase, status: RotationStatus): string {
  const rotation = status.rotation
  if (phase === 'init' && rotation) {
    return (
      `CA ${rotation.to} added to the trust bundle; CA ${rotation.from} still signs.\n` +
      `Agents pick up the new bundle when they renew. Run "writ ca rotate switch" after ${rotation.nextStepAllowedAt}.`
    )
  }
  if (phase === 'switch' && rotation) {
    const automatic = rotation.automaticFinishAt
      ? `The running server retires CA ${rotation.from} at about ${rotation.automaticFinishAt}.`
      : `Run "writ ca rotate finish" after ${rotation.nextStepAllowedAt} to retire CA ${rotation.from}.`
    return `CA ${rotation.to} now signs; CA ${rotation.from} stays trusted.\n${automatic}`
  }
  return `Old CA retired; the trust bundle holds ${status.trusted.length} CA.`
}

/** Formats the status as the lines `writ ca status` prints. */
export function formatStatus(status: RotationStatus): string {
  const lines = [`phase:           ${status.phase}`, `bundle sequence: ${status.sequence}`]
  lines.push('trusted CAs:')
  for (const ca of status.trusted) {
    const role = ca.signing ? 'signing' : 'trusted'
    lines.push(`  CA ${ca.generation}  ${role.padEnd(8)} ${ca.pin}  expires ${ca.notAfter}`)
  }
  if (status.retired.length > 0) lines.push(`retired CAs:     ${status.retired.join(', ')}`)
  const rotation = status.rotation
  if (rotation) {
    const next = rotation.phase === 'added' ? 'switch' : 'finish'
    lines.push(
      `next step:       writ ca rotate ${next}, allowed after ${rotation.nextStepAllowedAt}`,
    )
    if (rotation.graceSeconds !== undefined) {
      lines.push(`grace period:    ${formatDuration(rotation.graceSeconds)} after the switch`)
    }
    if (rotation.automaticFinishAt) {
      lines.push(`automatic finish: at about ${rotation.automaticFinishAt}`)
    }
  }
  return `${lines.join('\n')}\n`
}
